"""The pipeline's stages, one class per section, run in order by ``core.runner.Runner``.

Adding a stage (``tune``, ``compress``, ``report``) is adding a class: subclass
:class:`Stage`, set ``kind`` (the kind of component it runs; its section comes from the
kind table), ``needs``/``gives`` (the :class:`RunState` fields it reads and sets), implement
``run(state, env) -> report`` (and ``restore(record, state, env)`` when ``--resume`` must put
back more than the snapshot's tables: ``core.resume``; or ``restorable = False``), and list
the class in :data:`STAGES` at its place. A section
of a stage kind that no class here runs is refused before the run starts.
"""

from __future__ import annotations

from .augment import AugmentStage
from .base import RunState, Splits, Stage, StageEnv
from .clean import CleanStage
from .compress import CompressStage
from .data import DataStage
from .features import FeaturesStage
from .train import TrainStage
from .tune import TuneStage

#: the stage classes in run order
STAGES: tuple[type[Stage], ...] = (DataStage, CleanStage, AugmentStage, FeaturesStage, TuneStage, TrainStage,
                                   CompressStage)

__all__ = ["STAGES", "AugmentStage", "CleanStage", "CompressStage", "DataStage", "FeaturesStage", "RunState",
           "Splits", "Stage", "StageEnv", "TrainStage", "TuneStage"]
