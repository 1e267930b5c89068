"""The compress stage: the compressors in order on the trained model, then the table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..components import Kind
from .base import RunState, Stage, StageEnv

if TYPE_CHECKING:  # pragma: no cover
    from ..validation import Plan


class CompressStage(Stage):
    """One stage for the whole ``compress:`` list: each compressor works on the previous one's
    output, and the table compares every version (``forgeline.core.compression``)."""

    kind = Kind.COMPRESSOR
    needs = ("splits", "task", "model", "model_component")
    gives = ("model",)
    restorable = False  # the last stage: a resumed run compresses again

    @classmethod
    def for_plan(cls, plan: Plan) -> list[Stage]:
        if not plan.compress:
            return []
        stage = cls("compress", plan.compress[0])
        stage.names = [r.entry.name for r in plan.compress]
        return [stage]

    @property
    def name(self) -> str:
        return "+".join(self.names)

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        from ..compression import compress_run

        state.model, report = compress_run(state, env)
        return report
