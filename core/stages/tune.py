"""The tune stage: a study of training runs (``forgeline.core.tuning``), then the best values.

When every searched path is under ``train.``, the stage runs just before training and its
trials share the data the earlier stages prepared; otherwise it runs first and each trial is
a whole nested run. Either way it hands the runner the plan with the best values
(``RunState.replan``), and the runner rebuilds the stages after it from that plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..components import Kind
from .base import RunState, Stage, StageEnv

if TYPE_CHECKING:  # pragma: no cover
    from ..validation import Plan


class TuneStage(Stage):
    """Runs the tuner's study; the rest of the run continues with the best values found."""

    kind = Kind.TUNER
    gives = ("replan",)

    @classmethod
    def for_plan(cls, plan: Plan) -> list[Stage]:
        from ..tuning import tuned_paths_train_only

        stages = super().for_plan(plan)
        for stage in stages:
            stage.first = not tuned_paths_train_only(plan)  # trials change the data stages: search first
        return stages

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        from ..tuning import Study

        plan, report = Study(env, self.build()).run(None if self.first else state)
        state.replan = plan
        return report

    def restore(self, record: Mapping[str, Any], state: RunState, env: StageEnv) -> None:
        from ..tuning import Study

        state.replan = Study(env, self.build()).plan_with(record["report"]["best_values"], final=True)
