"""The training loop forgeline owns, and the job a stage hands it.

The train stage (``forgeline.core.stages.train``) builds a :class:`TrainJob` from the pipeline's
``train:`` section and the prepared tables; ``forgeline.core.train.loop.fit`` runs it on
this process (one rank of a torchrun world, or the only process) and returns a
:class:`TrainResult`. torch is imported only by the modules below this package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..components import (Augmenter, DistInfo, Model, ParallelStrategy, PrecisionPolicy, RunInfo,
                          StageContext)
from ..data import Table

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..pipeline import Train
    from .shards import ParquetSplit


@dataclass
class TrainJob:
    """Everything one training run needs; built by a stage (train, tune, compress), run by ``loop.fit``."""

    config: Train  # the pipeline's ``train:`` section
    model: Model  # the model component (``fit_inputs`` not yet called)
    precision: PrecisionPolicy
    parallel: ParallelStrategy
    train: Table | ParquetSplit  # a ParquetSplit: engine dask under --nproc, each rank reads its shard
    valid: Table | ParquetSplit | None
    task: str  # "classification" | "regression"
    classes: list[Any]  # label values in class-index order (classification), else []
    run: RunInfo
    dist: DistInfo
    seed: int = 0
    log: Callable[[Mapping[str, Any]], None] = lambda record: None  # metrics.jsonl + monitors
    hooks: Any = None  # plugin manager hook relay (lifecycle hooks) or None
    checkpoint_dir: Path | None = None  # None: no checkpoints (e.g. tuning trials)
    resume_from: Path | None = None  # a checkpoint file to continue from
    #: augmenters acting inside training: batch-level (``per_batch``) and ``online`` ones
    augmenters: list[Augmenter] = field(default_factory=list)
    #: train this module (e.g. a pruned one being fine-tuned) instead of building a new one
    module: torch.nn.Module | None = None
    #: the training loss ``loss(outputs, batch)`` instead of the model's (e.g. distillation)
    loss: Callable[[Any, Mapping[str, Any]], Any] | None = None
    stage: StageContext = field(default_factory=StageContext)  # progress, artifacts


@dataclass
class TrainResult:
    module: torch.nn.Module  # trained, unwrapped (full weights on every rank)
    metrics: dict[str, float]  # final validation metrics: val_loss, val_accuracy, val_auc, ...
    steps: int  # optimizer steps taken (skipped ones included)
    report: dict[str, Any] = field(default_factory=dict)  # for the manifest


def dist_from_env() -> DistInfo:
    """This process's place in a torchrun world (RANK/WORLD_SIZE/LOCAL_RANK), or a world of one."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))
