"""Resuming a run folder from its last finished stage.

After every finished stage the runner writes a *snapshot* of what the stages hand each
other (:class:`~forgeline.core.stages.RunState`) as data: the split tables (Parquet, arrays
as ``.npy`` without pickle) in ``stages/snapshot/<n>-<stage id>/`` when the stage changed
them, and ``stages/snapshot.json``, the pointer naming the last stage it holds, the tables
folder, the schemas, task, classes and probe score. The pointer is replaced atomically after
the tables are complete, and the stage's ``succeeded`` line is in the stage log before the
pointer moves, so a kill at any moment leaves a pointer at or before the last finished stage.

``--resume`` loads the snapshot, lets each finished stage up to the pointer put back the rest
of its outputs from its record (``Stage.restore``: fitted state, the tuner's values, the
trained model), and runs the stages after it. A succeeded run removes its snapshot.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .data import Schema, Table
from .errors import InputError
from .runfolder import inside, json_record, read_manifest, write_atomic
from .stages import RunState, Splits, Stage
from .stages.base import SPLITS

if TYPE_CHECKING:  # pragma: no cover
    from .runfolder import RunFolder
    from .validation import Plan

POINTER = "stages/snapshot.json"
TABLES = "stages/snapshot"
FORMAT = "forgeline-snapshot/1"
#: what ``--resume`` needs in a manifest, with where it is (``pipeline.given`` is the pipeline)
REQUIRED = {"name": str, "status": str, "pipeline": dict, "pipeline.given": dict}


def resumable_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a run folder to resume; a one-line InputError naming what is missing."""
    manifest = read_manifest(run_dir)
    missing = []
    for dotted, kind in REQUIRED.items():
        value: Any = manifest
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            missing.append(dotted)
    if missing:
        raise InputError(f"{run_dir / 'manifest.json'}: not a forgeline run manifest, it lacks "
                         f"{', '.join(missing)}; --resume needs a run folder written by forgeline run")
    return manifest


class Snapshots:
    """Writes the snapshot after each finished stage (rank 0; no-op elsewhere or when off)."""

    def __init__(self, folder: RunFolder, on: bool = True) -> None:
        self.folder, self.on = folder, on and folder.writes
        self.tables: str | None = None  # the tables folder of the newest split tables

    def save(self, index: int, stage: Stage, state: RunState) -> None:
        """Snapshot the state after stage ``index`` (a stage that cannot be restored moves no pointer)."""
        if not self.on or not stage.restorable:
            return
        root = self.folder.path
        if "splits" in stage.gives and state.splits is not None:
            try:
                tables = f"{TABLES}/{index:04d}-{stage.id}"
                _write_tables(root / tables, state)
            except (ValueError, TypeError, OSError, ImportError) as e:  # e.g. a column Parquet cannot hold
                self.on = False
                print(f"warning: the output of stage {stage.id} cannot be snapshotted ({type(e).__name__}: {e}); "
                      f"--resume of this run reruns the stages from {stage.id} on", file=sys.stderr)
                return
            self.tables = tables
        pointer = {"format": FORMAT, "stage": stage.id, "index": index, "tables": self.tables,
                   "task": state.task, "classes": state.classes, "probe": state.probe,
                   "schema": state.schema.to_dict() if state.schema is not None else None,
                   "splits": _split_docs(state.splits)}
        write_atomic(root / POINTER, json_record(pointer).encode())
        self.remove_old(keep=self.tables)

    def remove_old(self, keep: str | None = None) -> None:
        """Delete tables folders other than ``keep`` (all of them when None) and, then, the pointer."""
        if not self.folder.writes:
            return
        folder = self.folder.path / TABLES
        if folder.is_dir():
            for d in folder.iterdir():
                if keep is None or d.name != Path(keep).name:
                    shutil.rmtree(d, ignore_errors=True)
        if keep is None:
            (self.folder.path / POINTER).unlink(missing_ok=True)
            if folder.is_dir():
                folder.rmdir()


def _split_docs(splits: Splits | None) -> dict[str, Any]:
    if splits is None:
        return {}
    return {name: {"schema": t.schema.to_dict(), "arrays": sorted(t.arrays),
                   "meta": {k: v for k, v in t.meta.items() if k != "ground_truth"}} for name, t in splits.items()}


def _write_tables(folder: Path, state: RunState) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in state.splits.items():
        write_atomic(folder / f"{name}.parquet", lambda f, t=table: t.frame.to_parquet(f))
        for key, arr in table.arrays.items():
            write_atomic(inside(folder, f"{name}.{key}.npy"), lambda f, a=arr: np.save(f, a, allow_pickle=False))
    if state.ground_truth is not None:
        write_atomic(folder / "ground_truth.parquet", lambda f: state.ground_truth.to_parquet(f))


def load_snapshot(run_dir: Path) -> tuple[dict[str, Any], RunState] | None:
    """The pointer and the :class:`RunState` it holds, or None when the run left no snapshot.
    Read as data only (Parquet, ``.npy`` without pickle, JSON), every path inside the run folder."""
    file = run_dir / POINTER
    if not file.is_file():
        return None
    try:
        pointer = json.loads(file.read_text())
        if pointer.get("format") != FORMAT:
            raise ValueError(f"format {FORMAT!r} expected")
        state = RunState(task=pointer["task"], classes=list(pointer["classes"]), probe=pointer["probe"],
                         schema=Schema.from_dict(pointer["schema"]) if pointer["schema"] is not None else None)
        if pointer["tables"] is not None:
            state.splits, state.ground_truth = _read_tables(inside(run_dir, pointer["tables"]), pointer["splits"])
    except InputError:
        raise
    except Exception as e:  # damaged or hand-edited: say which file, never "internal error"
        raise InputError(f"{file}: damaged resume snapshot ({type(e).__name__}: {e}); "
                         f"start the run afresh instead of resuming it") from None
    return pointer, state


def _read_tables(folder: Path, docs: Mapping[str, Any]) -> tuple[Splits, Any]:
    import pandas as pd

    if not set(docs) <= set(SPLITS):
        raise ValueError(f"unknown splits {sorted(set(docs) - set(SPLITS))}")
    truth_file = folder / "ground_truth.parquet"
    truth = pd.read_parquet(truth_file) if truth_file.is_file() else None
    tables = {}
    for name, doc in docs.items():
        arrays = {k: np.load(inside(folder, f"{name}.{k}.npy"), allow_pickle=False) for k in doc["arrays"]}
        meta = dict(doc["meta"], **({"ground_truth": truth} if truth is not None else {}))
        tables[name] = Table(pd.read_parquet(folder / f"{name}.parquet"), Schema.from_dict(doc["schema"]), arrays, meta)
    return Splits(**tables), truth


def finished_prefix(stages: list[Stage], old: Mapping[str, Any], pointer: Mapping[str, Any], plan: Plan) -> int:
    """How many of ``stages`` the snapshot restores: all up to the pointer's stage, when each of
    them finished in the ``old`` record under the same id and component and the pipeline is the
    one the old run resolved (else 0: every stage runs again, say a ``--set`` changed it)."""
    if old["pipeline"].get("resolved") != json.loads(json_record(plan.resolved())):
        print("warning: the pipeline differs from the one the run resolved (a --set, another plugin "
              "version): every stage runs again", file=sys.stderr)
        return 0
    records = [r for r in old.get("stages") or [] if isinstance(r, dict)]
    done = {r.get("id"): r for r in records if isinstance(r, dict) and r.get("status") == "succeeded"}
    for index, stage in enumerate(stages):
        record = done.get(stage.id)
        if record is None or record.get("name") != stage.name or not stage.restorable:
            return 0
        if stage.id == pointer.get("stage"):
            return index + 1
    return 0
