"""Every hook forgeline calls, in one place.

Registration hooks (one per component kind) return component classes; *all* results are
collected and each class is checked where the registry calls the hook. Lifecycle hooks
observe the run; they receive handles (:class:`RunInfo`, :class:`StageInfo`), never data.
Implement any of them in a plugin module with ``@forgeline.core.hookimpl``; a module's
hook implementations may be wrappers (``@hookimpl(wrapper=True)`` with ``result = yield``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pluggy

from .report.model import ReportRun, ReportSection  # light: runtime types of the report hook

if TYPE_CHECKING:  # pragma: no cover
    import click

    from .components import (Augmenter, Cleaner, Compressor, Dataset, FeatureTransform, Model,
                             Monitor, ParallelStrategy, PrecisionPolicy, RunInfo, StageInfo,
                             StepInfo, Tuner)

PROJECT = "forgeline"
_hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------- registration: all results collected

@_hookspec
def forgeline_cleaners() -> Sequence[type[Cleaner]]:
    """Return the cleaner classes this plugin provides (pipeline section ``clean:``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_augmenters() -> Sequence[type[Augmenter]]:
    """Return the augmenter classes this plugin provides (section ``augment:``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_feature_transforms() -> Sequence[type[FeatureTransform]]:
    """Return the feature-transform classes this plugin provides (section ``features:``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_parallel_strategies() -> Sequence[type[ParallelStrategy]]:
    """Return the parallel-strategy classes this plugin provides (``train.parallel``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_precision_policies() -> Sequence[type[PrecisionPolicy]]:
    """Return the precision-policy classes this plugin provides (``train.precision``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_tuners() -> Sequence[type[Tuner]]:
    """Return the tuner classes this plugin provides (section ``tune``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_compressors() -> Sequence[type[Compressor]]:
    """Return the compressor classes this plugin provides (section ``compress:``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_models() -> Sequence[type[Model]]:
    """Return the model classes this plugin provides (``train.model``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_datasets() -> Sequence[type[Dataset]]:
    """Return the dataset classes this plugin provides (``data.source``).

    Called once when the catalog is built. All plugins' results are collected.
    """


@_hookspec
def forgeline_monitors() -> Sequence[type[Monitor]]:
    """Return the monitor classes this plugin provides (section ``monitor:``).

    Called once when the catalog is built. All plugins' results are collected.
    """


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
