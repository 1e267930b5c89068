"""forgeline from Python: load, validate and run pipelines; apply a finished run to new data.

    import forgeline.core.api as fl
    run = fl.run("examples/pipelines/clean-credit.yaml", quiet=True)
    run.metrics, run.dir, run.model
    cleaned = fl.open_run(run.dir).apply(new_frame).table

Like the CLI, this module is a composition root: it builds the plugin catalog (through
``forgeline.registry``) when none is given.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .catalog import Catalog
from .components import Component
from .data import Schema, Table
from .errors import InputError
from .runfolder import read_manifest
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
    """A finished run's fitted stages, reloaded from its folder, ready for new data."""

    dir: Path
    manifest: dict[str, Any]
    stages: list[tuple[str, Component]]
    schema: Schema

    def apply(self, data: Table | pd.DataFrame) -> CleanResult:
        """Clean and transform new rows exactly as the run did (fitted state, no refitting)."""
        return apply_stages(self.stages, data, self.schema)


def open_run(run_dir: str | Path) -> FittedRun:
    """Reload a run folder's fitted stages (pickles written by forgeline: open only runs you trust)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    stages = []
    for st in manifest.get("stages", []):
        state = (st.get("report") or {}).get("state")
        if state:
            with open(run_dir / state, "rb") as f:
                stages.append((st["id"], pickle.load(f)))  # noqa: S301 - the run folder's own state
    data = next((s for s in manifest.get("stages", []) if s["id"] == "data"), None)
    if data is None or data.get("status") != "succeeded":
        raise InputError(f"{run_dir}: the run did not get past its data stage")
    from .data import ColumnSpec, Modality, Role
    schema = Schema(tuple(ColumnSpec(c["name"], Role(c["role"]), Modality(c["modality"]))
                          for c in data["report"]["schema"]))
    return FittedRun(run_dir, manifest, stages, schema)
