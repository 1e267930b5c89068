"""forgeline from Python: load, validate and run pipelines; apply a finished run to new data.

    import forgeline.core.api as fl
    run = fl.run("examples/pipelines/clean-credit.yaml", quiet=True)
    run.metrics, run.dir, run.model
    cleaned = fl.open_run(run.dir).apply(new_frame).table

Like the CLI, this module is a composition root: it builds the plugin catalog (through
``forgeline.registry``) when none is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .catalog import Catalog
from .components import Component
from .data import ARRAY_MODALITIES, Role, Schema, Table
from .errors import InputError
from .runfolder import inside, read_manifest
from .state import load_component
from .runner import Run, Runner, apply_stages

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .components import CleanResult
    from .validation import Plan


def catalog(strict: bool = False) -> Catalog:
    """Every installed component (built-ins and plugins), found through entry points."""
    from ..registry import build_catalog
    return build_catalog(strict=strict)


def load(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), *,
         catalog_: Catalog | None = None, nproc: int = 1) -> Plan:
    """Load and validate a pipeline (file path or dict); raises InputError listing every problem."""
    from .validation import load_plan
    return load_plan(source, catalog_ or catalog(), overrides, nproc=nproc)


def run(source: str | Path | Mapping[str, Any] | Plan, overrides: Sequence[str] = (), *,
        out: str | Path = "runs", quiet: bool = True, catalog_: Catalog | None = None) -> Run:
    """Validate and run a pipeline into ``out/<name>-<timestamp>/``; returns the :class:`Run`."""
    cat = catalog_ or catalog()
    plan = source if hasattr(source, "pipeline") else load(source, overrides, catalog_=cat)
    return Runner(plan, cat, out=Path(out), quiet=quiet).run()


@dataclass
class FittedRun:
    """A finished run's fitted stages, reloaded from its folder as data, ready for new data.

    The stages' state is read on first use (after :meth:`check_columns`), each component's
    class coming from the installed catalog: nothing in the run folder is executed."""

    dir: Path
    manifest: dict[str, Any]
    schema: Schema
    catalog: Catalog
    _stages: list[tuple[str, Component]] | None = None

    @property
    def stages(self) -> list[tuple[str, Component]]:
        if self._stages is None:
            self._stages = [(stage_id, load_component(self.dir / state, self.catalog, self.dir))
                            for stage_id, state in _state_files(self.manifest, self.dir)]
        return self._stages

    def check_columns(self, columns: Sequence[str], where: str = "data") -> None:
        """One-line InputError naming the columns the run was fitted on that are missing, and the unknown ones."""
        columns = [str(c) for c in columns]
        frame_cols = [c for c in self.schema.columns if c.modality not in ARRAY_MODALITIES]
        missing = [c.name for c in frame_cols if c.role == Role.FEATURE and c.name not in columns]
        known = {c.name for c in frame_cols}
        extra = [c for c in columns if c not in known]
        if len(set(columns)) != len(columns):
            twice = sorted({c for c in columns if columns.count(c) > 1})
            raise InputError(f"{where}: duplicate column names {', '.join(twice)}; every column needs its own name")
        parts = ([f"missing columns the run was fitted on: {', '.join(missing)}"] if missing else []) + (
            [f"columns the run does not know: {', '.join(extra)} (drop them)"] if extra else [])
        if parts:
            raise InputError(f"{where}: {'; '.join(parts)}")

    def apply(self, data: Table | pd.DataFrame) -> CleanResult:
        """Clean and transform new rows exactly as the run did (fitted state, no refitting)."""
        self.check_columns(list(data.frame.columns if isinstance(data, Table) else data.columns))
        return apply_stages(self.stages, data, self.schema)


def _state_files(manifest: Mapping[str, Any], run_dir: Path) -> list[tuple[str, str]]:
    """(stage id, state file) of every stage with fitted state; each path checked to stay in the folder."""
    found = []
    for st in manifest.get("stages", []):
        state = (st.get("report") or {}).get("state") if isinstance(st, dict) else None
        if state:
            inside(run_dir, state)
            found.append((st["id"], state))
    return found


def open_run(run_dir: str | Path, catalog_: Catalog | None = None) -> FittedRun:
    """Reopen a run folder for :meth:`FittedRun.apply`. Its stage state is data (JSON, .npy, and
    scikit-learn objects through skops' trusted types), so opening a run runs none of its files."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    _state_files(manifest, run_dir)  # refuse paths out of the folder before anything is read
    data = next((s for s in manifest.get("stages", []) if s.get("id") == "data"), None)
    if data is None or data.get("status") != "succeeded":
        raise InputError(f"{run_dir}: the run did not get past its data stage")
    try:
        schema = Schema.from_dict(data["report"]["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{run_dir / 'manifest.json'}: the data stage's schema is damaged ({e})") from None
    return FittedRun(run_dir, manifest, schema, catalog_ or catalog())
