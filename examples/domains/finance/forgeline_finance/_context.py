"""The one place a component finds its stage context (``self.context`` once the core binds it)."""

from __future__ import annotations

from forgeline.core import StageContext


def stage_context(component: object, ctx: StageContext | None) -> StageContext:
    """``ctx`` when the caller passed one, else the component's bound context, else a standalone one."""
    return ctx or getattr(component, "context", None) or StageContext.standalone()
