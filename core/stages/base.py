"""The stage protocol: what a stage needs, what it produces, what it records.

A stage is a small class that runs one component of the pipeline. It reads and writes the
:class:`RunState` the stages share (``needs``/``gives`` name the fields), uses what the
runner lends it (:class:`StageEnv`: the run folder, the metrics recorder, the plan) and
returns its report, which the runner writes into the manifest. The runner owns everything
around it: the manifest entry, timing, lifecycle hooks, monitors and error handling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

from ..components import Augmenter, Component, DistInfo, Kind, RunInfo, StageContext
from ..data import Schema, Table
from ..kinds import spec_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..catalog import Catalog
    from ..runfolder import RunFolder
    from ..validation import Plan, Resolved

SPLITS = ("train", "valid", "test")


@dataclass
class Splits:
    """The three splits as tables; ``valid`` is the test split when no validation share is set."""

    train: Table
    valid: Table | None = None
    test: Table | None = None

    def items(self) -> Iterator[tuple[str, Table]]:
        for name in SPLITS:
            t = getattr(self, name)
            if t is not None:
                yield name, t

    def map(self, fn: Callable[[str, Table], Table]) -> Splits:
        return Splits(**{name: fn(name, t) for name, t in self.items()})

    @property
    def validation(self) -> Table:
        """What training validates on: the validation split, else the test split."""
        return self.valid if self.valid is not None else self.test


@dataclass
class RunState:
    """What the stages hand each other, filled as they run (None: not produced yet)."""

    splits: Splits | None = None
    schema: Schema | None = None  # the loaded data's schema: what new data must look like
    task: str | None = None  # "classification" | "regression" | "none"
    classes: list[Any] = field(default_factory=list)  # label values in class-index order
    ground_truth: pd.DataFrame | None = None  # the dataset's known faults, by row id (generators)
    fitted: list[tuple[str, Component]] = field(default_factory=list)  # (stage id, fitted component)
    #: augmenters acting inside training: batch-level and online ones
    training_augmenters: list[Augmenter] = field(default_factory=list)
    probe: float | None = None  # the probe score of the current features (see stages.features)
    replan: Plan | None = None  # set by a stage (tune) that changes the plan the rest of the run follows
    model: Any = None  # the trained torch module
    model_component: Component | None = None  # the fitted model component (input encodings)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class StageEnv:
    """What the runner lends every stage: the plan, the run folder, records, this process."""

    plan: Plan
    folder: RunFolder
    record: Callable[[Mapping[str, Any]], None]  # metrics.jsonl and every monitor
    run: RunInfo
    dist: DistInfo
    hooks: Any = None  # the plugin manager's hook relay (the training loop's own hooks)
    resume: Path | None = None  # the run folder being resumed
    catalog: Catalog | None = None  # every registered component (a tuner's trials resolve plans)
    quiet: bool = False  # print nothing but errors (tables, the run folder)

    def context(self, stage_id: str) -> StageContext:
        """The stage's context: seed, its artifacts folder (rank 0), logging, rank."""
        art = self.folder.sub("artifacts")
        if art is not None:
            art = art / stage_id
            art.mkdir(parents=True, exist_ok=True)
        return StageContext(seed=self.plan.pipeline.seed, artifacts=art, log=self.record,
                            rank=self.dist.rank, world_size=self.dist.world_size)


class Stage:
    """One pipeline component run as a stage. Subclass it, set ``kind``, implement ``run``.

    ``needs``: the :class:`RunState` fields ``run`` reads (the runner checks they are set);
    ``gives``: the fields it sets. ``run`` returns the stage's report (counts, statistics,
    files written: JSON-ready), which goes into the manifest and to the lifecycle hooks.
    """

    kind: ClassVar[Kind | str]
    needs: ClassVar[tuple[str, ...]] = ()
    gives: ClassVar[tuple[str, ...]] = ()
    #: run before every other stage (a tuner whose trials change the data stages)
    first: bool = False
    #: ``--resume`` can put back what it gave from the run folder instead of running it again
    restorable: ClassVar[bool] = True

    def __init__(self, stage_id: str, resolved: Resolved) -> None:
        self.id, self.resolved = stage_id, resolved
        self.component: Component | None = None

    @classmethod
    def for_plan(cls, plan: Plan) -> list[Stage]:
        """The stages this class runs for ``plan``: one per component of its kind."""
        spec = spec_of(cls.kind)
        found = plan.of(spec)
        if spec.many:
            return [cls(f"{spec.section}.{i}", r) for i, r in enumerate(found)]
        return [cls(spec.section.split(".")[0], r) for r in found]

    @property
    def section(self) -> str:
        return self.id.split(".")[0]

    @property
    def name(self) -> str:
        return self.resolved.entry.name

    @property
    def provider(self) -> str:
        return self.resolved.entry.distribution

    def build(self) -> Component:
        """The stage's component, built once (the runner calls it inside its error handling)."""
        if self.component is None:
            self.component = self.resolved.build()
        return self.component

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, record: Mapping[str, Any], state: RunState, env: StageEnv) -> None:
        """On ``--resume``, put back what this finished stage gave beyond the snapshot's data
        (``core.resume``: tables, schema, task, classes, probe) from its ``record`` (its manifest
        entry) and the run folder. Default: nothing more."""

    def load_fitted(self, record: Mapping[str, Any], state: RunState, env: StageEnv) -> None:
        """Append this stage's saved fitted component (its report's ``state`` file) to ``state.fitted``."""
        from ..state import load_component

        file = (record.get("report") or {}).get("state")
        if file:
            state.fitted.append((self.id, load_component(Path(file), env.catalog, env.run.dir)))
