"""Every hook forgeline calls, in one place.

Registration hooks (one per component kind, built from the kind table in
``forgeline.core.kinds``) return component classes; *all* results are
collected and each class is checked where the registry calls the hook. Lifecycle hooks
observe the run; they receive handles (:class:`RunInfo`, :class:`StageInfo`), never data.
Implement any of them in a plugin module with ``@forgeline.core.hookimpl``; a module's
hook implementations may be wrappers (``@hookimpl(wrapper=True)`` with ``result = yield``).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pluggy

from .kinds import KindSpec, kinds
from .report.model import ReportRun, ReportSection  # light: runtime types of the report hook

if TYPE_CHECKING:  # pragma: no cover
    import click

    from .components import Component, RunInfo, StageInfo, StepInfo

PROJECT = "forgeline"
_hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------- registration: all results collected

def registration_spec(spec: KindSpec) -> Callable[[], Sequence[type[Component]]]:
    """The registration hookspec of a kind, built from its declaration (``forgeline.core.kinds``).

    Like pytest's ``pytest_addhooks``, a kind declared later (by a plugin) adds its hook the
    same way: the registry adds these specs for every kind before it loads plugins.
    """
    def hook() -> Sequence[type[Component]]:
        pass

    where = f"section ``{spec.section}:``" if spec.top_level else f"``{spec.section}``"
    hook.__name__ = hook.__qualname__ = spec.hook
    hook.__module__ = __name__
    hook.__doc__ = (f"Return the {spec.kind} classes this plugin provides ({where}).\n\n"
                    f"    Called once when the catalog is built. All plugins' results are collected.\n    ")
    hook.__annotations__ = {"return": Sequence[type[spec.base]]}
    return _hookspec(hook)


def registration_specs(specs: Iterable[KindSpec]) -> SimpleNamespace:
    """A namespace of registration hookspecs for ``pm.add_hookspecs``."""
    return SimpleNamespace(**{s.hook: registration_spec(s) for s in specs})


# the built-in kinds' hooks, as module functions (so ``pm.add_hookspecs(hookspecs)`` has them)
globals().update(vars(registration_specs(kinds())))


# --------------------------------------------------------------- lifecycle: observers, results ignored

@_hookspec
def forgeline_run_started(run: RunInfo) -> None:
    """Called on every rank after the pipeline is validated and the run folder exists,
    before the first stage. Return value ignored."""


@_hookspec
def forgeline_run_finished(run: RunInfo, status: str, error: BaseException | None) -> None:
    """Called on every rank when the run ends; ``status`` is ``"succeeded"`` or ``"failed"``
    (then ``error`` is the exception). Called even when a stage failed. Return value ignored."""


@_hookspec
def forgeline_stage_started(run: RunInfo, stage: StageInfo) -> None:
    """Called before each stage (data, each cleaner, augmenter, feature transform, train,
    tune, each compressor). Return value ignored."""


@_hookspec
def forgeline_stage_finished(run: RunInfo, stage: StageInfo, report: Mapping[str, Any]) -> None:
    """Called after each stage that succeeded, with the stage's report (counts and
    statistics, as written to the manifest). Return value ignored."""


@_hookspec
def forgeline_train_step_ended(run: RunInfo, step: StepInfo) -> None:
    """Called after every optimizer step (skipped fp16 steps included) on every rank.

    Keep it cheap: it runs inside the training loop. When no plugin implements this hook
    the loop does not even build the :class:`StepInfo`. Return value ignored."""


@_hookspec
def forgeline_epoch_ended(run: RunInfo, epoch: int, metrics: Mapping[str, float]) -> None:
    """Called after each training epoch with the epoch's reduced metrics (train and
    validation). Return value ignored."""


@_hookspec
def forgeline_checkpoint_saved(run: RunInfo, path: Path, step: int) -> None:
    """Called on rank 0 after a checkpoint file was atomically written. Return value ignored."""


# --------------------------------------------------------------- report

@_hookspec
def forgeline_report_sections(run: ReportRun) -> Sequence[ReportSection]:
    """Return sections to add to the run's ``report.html`` (after the built-in ones).

    Called on rank 0 at the end of every run (failed runs too) and by ``forgeline report``,
    with the run folder as :class:`ReportRun` (manifest, metrics records, artifacts). Each
    :class:`ReportSection` is a title and HTML; escape every value taken from the run with
    ``html.escape``. All plugins' results are collected, one plugin at a time: a plugin that
    raises or returns something else gets an error box naming it, and the report carries on."""


# --------------------------------------------------------------- CLI

@_hookspec
def forgeline_cli_commands() -> Sequence[click.Command]:
    """Return click commands to add to the ``forgeline`` CLI.

    Called when the CLI starts; all plugins' results are collected. A name that clashes
    with a built-in command is reported and skipped."""
