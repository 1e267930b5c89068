"""The data stage: load the table, apply the pipeline's roles, infer the task, split."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from ..components import Dataset, Kind
from ..data import ColumnSpec, Modality, Role, Schema, Table, hash_split
from ..datacheck import check_loaded
from ..errors import InputError, Problem
from .base import RunState, Splits, Stage, StageEnv


class DataStage(Stage):
    """Loads the dataset; gives the splits, the schema, the task and the ground truth."""

    kind = Kind.DATASET
    gives = ("splits", "schema", "task", "classes", "ground_truth")

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        dataset: Dataset = self.build()
        data = env.plan.pipeline.data
        if data.engine == "dask":
            from .partitions import load_splits
            from .ranks import follows_rank_zero, receive_cleaned

            if follows_rank_zero(env):  # rank 0 loads and cleans, on the cluster
                return receive_cleaned(state, env)
            return load_splits(dataset, state, env)
        table = with_roles(dataset.load(dataset.context), dataset, data)
        table, checked = check_loaded(table, {n: o.modality for n, o in data.columns.items()})
        if len(table) == 0:
            raise InputError([Problem("data.source", f"{self.name!r} gave an empty table; it needs rows")])
        fp = table.fingerprint()
        env.folder.manifest["inputs"][self.name] = {**fp, "params": self.resolved.params.model_dump(mode="json")}
        state.task, state.classes = infer_task(table)
        how = data.split.model_copy(update={"method": data.split_method})
        state.splits = split(table, how, env.plan.pipeline.seed, state.task)
        state.ground_truth, state.schema = table.meta.get("ground_truth"), table.schema
        env.folder.write_json("stages/splits.json", {name: t.row_ids for name, t in state.splits.items()})
        return dict(rows=len(table), columns=len(table.schema.columns), target=table.target, task=state.task,
                    classes=len(state.classes), fingerprint=fp["sha256"],
                    splits={name: len(t) for name, t in state.splits.items()}, schema=table.schema.to_dict(),
                    **checked)

    def restore(self, record: Mapping[str, Any], state: RunState, env: StageEnv) -> None:
        r = record["report"]
        env.folder.manifest["inputs"][self.name] = {"sha256": r["fingerprint"], "rows": r["rows"],
                                                    "columns": r["columns"],
                                                    "params": self.resolved.params.model_dump(mode="json")}


def with_roles(table: Table, dataset: Any, data: Any) -> Table:
    """Apply the pipeline's ``data.target`` and ``data.columns`` role/modality overrides."""
    target = data.target or table.target or getattr(dataset, "default_target", None)
    if target is not None and target not in table.schema:
        raise InputError([Problem("data.target", f"column {target!r} is not in the data; "
                                  f"columns: {', '.join(table.schema.names()[:20])}")])
    specs = []
    for c in table.schema.columns:
        role = Role.TARGET if c.name == target else (Role.FEATURE if c.role == Role.TARGET else c.role)
        o = data.columns.get(c.name)
        specs.append(ColumnSpec(c.name, Role(o.role) if o and o.role else role,
                                Modality(o.modality) if o and o.modality else c.modality))
    unknown = set(data.columns) - {c.name for c in specs}
    if unknown:
        raise InputError([Problem(f"data.columns.{n}", "no such column") for n in sorted(unknown)])
    return replace(table, schema=Schema(tuple(specs)))


def infer_task(table: Table) -> tuple[str, list[Any]]:
    """Classification when the target is categorical or has few integer values, else regression."""
    y = table.y
    if y is None:
        return "none", []
    spec = table.schema[table.target]
    values = y.dropna()
    few_ints = np.issubdtype(values.dtype, np.integer) and values.nunique() <= max(20, int(len(values) ** 0.5) // 10)
    if spec.modality == Modality.CATEGORICAL or not np.issubdtype(values.dtype, np.number) or few_ints:
        return "classification", sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    return "regression", []


def split(table: Table, s: Any, seed: int, task: str) -> Splits:
    """Test (and validation) splits fixed by the seed: stratified for classification (method
    random), or by a hash of each row id (method hash: :func:`~forgeline.core.data.hash_split`)."""
    from sklearn.model_selection import train_test_split

    ids = table.row_ids
    if s.method == "hash":
        code = hash_split(ids, s.test, s.validation, seed)
        return Splits(table.take_mask(code == 0), table.take_mask(code == 1) if s.validation else None,
                      table.take_mask(code == 2))
    strat = table.y.to_numpy() if (s.stratify and task == "classification") else None
    try:
        rest, test = train_test_split(ids, test_size=s.test, random_state=seed, stratify=strat)
        valid = None
        if s.validation:
            strat_rest = table.take(rest).y.to_numpy() if strat is not None else None
            rest, valid = train_test_split(rest, test_size=s.validation / (1 - s.test),
                                           random_state=seed, stratify=strat_rest)
    except ValueError as e:  # e.g. a class with a single row cannot be stratified
        raise InputError([Problem("data.split", f"{e}; use stratify: false or more rows")]) from e
    return Splits(table.take(np.sort(rest)), table.take(np.sort(valid)) if valid is not None else None,
                  table.take(np.sort(test)))
