"""The data and clean stages on engine dask: splits as partitions, cleaned partition by partition.

The data stage reads the source lazily (:func:`load_splits`), the clean stages fit by passes
over the training split's partitions and then clean each partition of each split on the
workers (:func:`clean_splits`), writing the kept rows and the quarantined rows as partitioned
Parquet into the run folder (``partitions/<stage>/<split>/``, ``quarantine/<stage>/<split>/``;
the last clean stage's output is ``cleaned/<split>/``). Every partition's result passes the
same row accounting as the pandas path (:meth:`CleanResult.accounting_problem`), and the
split's totals are checked again. Training then reads the cleaned partitions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..components import Cleaner, CleanResult, Dataset, PartitionPlan
from ..data import ARRAY_MODALITIES, ROW_ID, Modality, Schema, Table
from ..errors import InputError, Problem
from ..partitioned import (Partitioned, Profile, client, compute_each, partition_budget, read_frame,
                           split_partitioned, with_row_ids, worker_peaks, write_frame)
from .base import RunState, Splits, StageEnv

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd
    import pandas as pd

    from ..pipeline import DaskSettings

CLEANED = "cleaned"


# ============================================================================ the data stage

def load_splits(dataset: Dataset, state: RunState, env: StageEnv) -> dict[str, Any]:
    """Read the source in partitions, number its rows, split by row id hash; no table in memory."""
    from .data import with_roles

    data = env.plan.pipeline.data
    client(data.dask)
    frame = with_row_ids(source_frame(dataset, data.dask), partition_budget())
    head = frame.get_partition(0).compute()
    sample = Table(head, Schema.infer(head, None, None, {}), meta={})
    schema = with_roles(sample, dataset, data).schema
    arrays = [c.name for c in schema.columns if c.modality in ARRAY_MODALITIES]
    if arrays:
        raise InputError([Problem("data.engine", f"engine dask reads table columns only; {arrays[0]!r} is an "
                                  f"array column (images, series, volumes): use engine: pandas")])
    parts = Partitioned(frame, schema)
    state.schema = schema
    state.task, state.classes = infer_task_partitioned(parts)
    s = data.split
    state.splits = Splits(**split_partitioned(parts, s.test, s.validation, env.plan.pipeline.seed))
    sizes = {name: p.rows() for name, p in state.splits.items()}  # remembered by each split
    if not sizes["train"]:
        raise InputError([Problem("data.source", f"{dataset.name!r} gave no training rows; it needs rows")])
    env.folder.manifest["inputs"][dataset.name] = {"rows": int(sum(sizes.values())), "columns": len(schema.columns),
                                                  "partitions": frame.npartitions,
                                                  "params": dataset.params.model_dump(mode="json")}
    env.folder.write_json("stages/splits.json", {"method": "hash", "seed": env.plan.pipeline.seed,
                                                 "test": s.test, "validation": s.validation})
    if not env.plan.clean:
        ready_for_training(state, env)
    return dict(rows=int(sum(sizes.values())), columns=len(schema.columns), target=schema.target, task=state.task,
                classes=len(state.classes), engine="dask", partitions=frame.npartitions, split_method="hash",
                splits=sizes, schema=schema.to_dict())


def source_frame(dataset: Dataset, settings: DaskSettings) -> dd.DataFrame:
    """The dataset's rows as a Dask frame: its own ``partitions(settings)`` when it reads files
    lazily (the ``file`` dataset: CSV/Parquet files, folders, globs), else its loaded table
    cut into ``settings.partitions`` partitions."""
    import dask.dataframe as dd

    own = getattr(dataset, "partitions", None)
    if callable(own):
        return own(settings)
    table = dataset.load(dataset.context)
    if table.arrays:
        raise InputError([Problem("data.engine", f"engine dask reads table columns only; {next(iter(table.arrays))!r}"
                                  f" is an array column (images, series, volumes): use engine: pandas")])
    return dd.from_pandas(table.frame.reset_index(drop=True), npartitions=settings.partitions, sort=False)


def infer_task_partitioned(parts: Partitioned) -> tuple[str, list[Any]]:
    """``stages.data.infer_task`` by passes over the partitions (the target's distinct values)."""
    target = parts.target
    if target is None:
        return "none", []
    y = parts.frame[target].dropna()
    numeric = np.issubdtype(y.dtype, np.number)
    categorical = parts.schema[target].modality == Modality.CATEGORICAL
    if numeric and not categorical and not np.issubdtype(y.dtype, np.integer):
        return "regression", []
    distinct = y.drop_duplicates().compute()
    n = int(y.count().compute())
    if categorical or not numeric or len(distinct) <= max(20, int(n ** 0.5) // 10):
        return "classification", sorted(distinct.tolist(), key=lambda v: (str(type(v)), v))
    return "regression", []


# ============================================================================ the clean stage

def clean_splits(stage_id: str, cleaner: Cleaner, provider: str, state: RunState, env: StageEnv) -> dict[str, Any]:
    """Fit ``cleaner`` on the training split's partitions, clean every split partition by
    partition into the run folder; the report counts rows per split, in total and checked."""
    if not env.folder.writes:
        raise InputError("engine dask writes the cleaned partitions into the run folder; run with one process")
    last = stage_id == f"clean.{len(env.plan.clean) - 1}"
    out_root = env.folder.path / (CLEANED if last else f"partitions/{stage_id}")
    stem = f"{stage_id}-{cleaner.name}"
    report: dict[str, Any] = {"engine": "dask", "route": route(cleaner)}
    new, details = {}, []
    for name, parts in state.splits.items():
        plan = partition_plan(cleaner, parts, name == "train")
        counts, new[name], reports = run_partitions(parts, plan.apply, out_root / name,
                                                    env.folder.path / "quarantine" / stem / name, stage_id, name,
                                                    final=last, profile=name == "train" and not last)
        report[name] = {**counts, "partitions": parts.npartitions}
        details.append(merge_reports([plan.report, *reports]) if name == "train" else None)
    previous = {p.meta.get("folder") for _, p in state.splits.items() if p.meta.get("folder")}
    state.splits = Splits(**new)
    for folder in previous:  # the previous clean stage's partitions: consumed
        shutil.rmtree(folder, ignore_errors=True)
    quarantine = env.folder.path / "quarantine" / stem
    report["quarantine"] = str(quarantine.relative_to(env.folder.path)) if quarantine.exists() else None
    report["output"] = str(out_root.relative_to(env.folder.path))
    report["details"] = details[0]
    report["state"] = env.folder.save_stage(stem, cleaner, provider)
    report["worker_peak_memory_mib"] = worker_peaks()  # each worker process's peak so far
    state.fitted.append((stage_id, cleaner))
    if last:
        ready_for_training(state, env)
    return report


def route(cleaner: Cleaner) -> str:
    """How a cleaner runs on partitions (see :class:`Cleaner`)."""
    if type(cleaner).clean_partitions is not Cleaner.clean_partitions:
        return "clean_partitions"
    if type(cleaner).fit_partitions is not Cleaner.fit_partitions:
        return "fit_partitions"
    return "partition_wise"


def partition_plan(cleaner: Cleaner, parts: Partitioned, fit: bool) -> PartitionPlan:
    """What to run on each partition of ``parts``, after fitting on it when ``fit``."""
    how = route(cleaner)
    if how == "clean_partitions":
        return cleaner.clean_partitions(parts, cleaner.context, fit=fit)
    if fit and how == "fit_partitions":
        cleaner.fit_partitions(parts, cleaner.context)
    elif fit:
        cleaner.fit(Table(parts.frame.get_partition(0).compute().rename_axis(ROW_ID), parts.schema),
                    cleaner.context)
    return PartitionPlan(apply=ApplyFitted(cleaner))


@dataclass
class ApplyFitted:
    """A fitted cleaner's ``apply`` on one partition (no artifacts written from the workers)."""

    cleaner: Cleaner

    def __call__(self, table: Table) -> CleanResult:
        return self.cleaner.apply(table, None)


def run_partitions(parts: Partitioned, apply: Callable[[Table], CleanResult], kept: Path, quarantine: Path,
                   stage_id: str, split: str, final: bool = True, profile: bool = True
                   ) -> tuple[dict[str, int], Partitioned, list[dict[str, Any]]]:
    """``apply`` on every partition on the workers, each writing its kept and removed rows; the
    accounting is checked per partition there and for the split here. Returns the counts, the
    kept rows read back lazily (same partitions, empty ones left out) and the reports.

    The kept rows of a ``final`` stage are Parquet (the run's output); a stage whose output
    only the next stage reads writes them as Arrow IPC files, 3-4x cheaper to write than
    Parquet and read back without decoding. Quarantined rows are always Parquet. With
    ``profile``, each kept partition's :class:`Profile` comes back too (the training split:
    the next stage fits from them)."""
    import dask

    kept.mkdir(parents=True, exist_ok=True)
    quarantine.mkdir(parents=True, exist_ok=True)
    suffix = "parquet" if final else "arrow"
    shared = dask.delayed(apply, pure=True)  # the fitted state once in the graph, not once a partition
    tasks = [dask.delayed(_clean_partition)(part, parts.schema, shared, kept / f"part-{i:05d}.{suffix}",
                                            quarantine / f"part-{i:05d}.parquet", stage_id, split, profile)
             for i, part in enumerate(parts.frame.to_delayed())]
    results = compute_each(tasks)
    for i, r in enumerate(results):
        if r["problem"]:
            raise RuntimeError(f"stage {stage_id}: the cleaner broke the accounting on partition {i} of the "
                               f"{split} split: {r['problem']} (every row must be kept or quarantined, with a reason)")
    counts = {k: int(sum(r[k] for r in results)) for k in ("rows_in", "rows_out", "removed", "flagged")}
    if counts["rows_out"] + counts["removed"] != counts["rows_in"]:
        raise RuntimeError(f"stage {stage_id}: {counts['rows_in']} rows in the {split} split, "
                           f"{counts['rows_out']} kept + {counts['removed']} quarantined")
    if not any(quarantine.iterdir()):
        quarantine.rmdir()
    written = [r for r in results if r["rows_out"]]
    meta = {**{k: v for k, v in parts.meta.items() if k not in ("rows", "profiles")}, "folder": str(kept),
            "rows": counts["rows_out"], **({"profiles": [r["profile"] for r in written]} if profile else {})}
    out = read_partitions([(r["path"], r["first"], r["last"]) for r in written], results[0]["schema"],
                          results[0]["empty"], meta)
    return counts, out, [r["report"] for r in results]


def _clean_partition(frame: pd.DataFrame, schema: Schema, apply: Callable[[Table], CleanResult], kept: Path,
                     quarantine: Path, stage_id: str, split: str, profile: bool) -> dict[str, Any]:
    """One partition cleaned (on a worker): its files written, its counts and report returned."""
    frame.index.name = ROW_ID
    table = Table(frame, schema)
    out = apply(table)
    problem = out.accounting_problem(table)
    ids = out.table.row_ids
    if not problem:
        write_frame(out.table.frame, kept)
        if len(out.removed):
            out.removed.assign(stage=stage_id, split=split).to_parquet(quarantine)
    return {"problem": problem, "rows_in": len(table), "rows_out": len(out.table), "removed": len(out.removed),
            "flagged": len(out.flagged), "schema": out.table.schema, "report": out.report, "path": str(kept),
            "first": int(ids.min()) if len(ids) else None, "last": int(ids.max()) if len(ids) else None,
            "empty": out.table.frame.iloc[:0],
            "profile": Profile.of(out.table.frame) if profile and not problem else None}


def read_partitions(written: list[tuple[str, int, int]], schema: Schema, empty: pd.DataFrame,
                    meta: dict[str, Any]) -> Partitioned:
    """Written partitions ``(path, first row id, last row id)``, in row id order, as a lazy
    split with known divisions (a split with no rows left is one empty partition)."""
    import dask
    import dask.dataframe as dd

    empty.index.name = ROW_ID
    if not written:
        return Partitioned(dd.from_pandas(empty, npartitions=1), schema, meta)
    divisions = tuple(first for _, first, _ in written) + (written[-1][2],)
    frame = dd.from_delayed([dask.delayed(read_frame)(path) for path, _, _ in written], meta=empty,
                            divisions=divisions, verify_meta=False)
    return Partitioned(frame, schema, meta)


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Partition reports as one: counts (ints) summed, nested mappings merged, any other value
    kept when every partition agrees on it (fitted bounds, settings) and left out otherwise."""
    reports = [r for r in reports if r]
    if not reports:
        return {}
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in reports for k in r):
        values = [r[key] for r in reports if key in r]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = sum(values)
        elif all(isinstance(v, dict) for v in values):
            merged = merge_reports(values)
            if merged:
                out[key] = merged
        elif all(v == values[0] for v in values[1:]):
            out[key] = values[0]
    return out


def ready_for_training(state: RunState, env: StageEnv) -> None:
    """Before the stages that hold rows in memory (augment, features, train): each split's
    cleaned partitions read into a table, in the training process; under ``--nproc``, the
    cleaned partitions handed to every rank instead (``stages.ranks``), each reading its shard."""
    if env.dist.world_size > 1:
        from .ranks import publish_cleaned

        publish_cleaned(state, env)
        return
    plan = env.plan
    if plan.pipeline.train is None and not plan.augment and not plan.features:
        return
    state.splits = Splits(**{name: p.to_table() for name, p in state.splits.items()})
