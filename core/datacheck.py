"""Checks of a freshly loaded table, run by the data stage: input the later stages would
otherwise misread in silence (a number column with a few stray strings classed as text and
dropped, cells holding lists, a target with one value). Each is a one-line
:class:`InputError`, or a change stated in the data stage's report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from .data import Modality, Role, Table
from .errors import InputError, Problem

#: an object column whose observed cells are at least this share numbers is a number column
#: with stray values, not text
MOSTLY_NUMERIC = 0.9


def check_loaded(table: Table, declared: Mapping[str, str | None]) -> tuple[Table, dict[str, Any]]:
    """The table, with declared-numeric columns parsed, and what the data stage should report.

    ``declared``: the modality the pipeline's ``data.columns`` gives a column, if any."""
    import pandas as pd

    frame, notes = table.frame, {}
    coerced: dict[str, Any] = {}
    for spec in table.schema.columns:
        if spec.name not in frame.columns or spec.role not in (Role.FEATURE, Role.TARGET):
            continue
        s = frame[spec.name]
        if not (s.dtype == object or isinstance(s.dtype, pd.StringDtype)):
            continue
        nested = s.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray))).to_numpy()
        if nested.any():
            raise InputError([Problem(f"data.columns.{spec.name}", f"column {spec.name!r} holds "
                                      f"{_kind(s[nested].iloc[0])} in its cells, one value per cell is needed; "
                                      f"flatten it into columns or leave it out (data.with.columns)")])
        observed = s.dropna()
        if declared.get(spec.name) is None and pd.to_numeric(observed.iloc[:1000], errors="coerce").notna().mean() < 0.5:
            continue  # text or categories: not worth parsing whole
        numbers = pd.to_numeric(observed, errors="coerce")
        bad = observed[numbers.isna()]
        if len(observed) == 0 or len(bad) == 0 or len(bad) == len(observed):
            continue
        examples = ", ".join(repr(str(v)) for v in pd.unique(bad.astype(str))[:3])
        if declared.get(spec.name) == Modality.NUMERIC.value:
            frame = frame.assign(**{spec.name: pd.to_numeric(s, errors="coerce")})
            coerced[spec.name] = {"cells_not_numbers": len(bad), "examples": examples}
        elif declared.get(spec.name) is None and len(bad) <= (1 - MOSTLY_NUMERIC) * len(observed):
            raise InputError([Problem(f"data.columns.{spec.name}", f"column {spec.name!r} holds numbers except "
                                      f"{len(bad)} of {len(observed)} values ({examples}); fix those cells, or "
                                      f"declare 'modality: numeric' (they become missing values, counted in the run "
                                      f"record) or 'modality: text'/'categorical'")])
    if coerced:
        notes["coerced_to_numeric"] = coerced
        table = replace(table, frame=frame)
    target = table.target
    if target is not None and target in table.frame.columns:
        values = table.frame[target].dropna()
        if values.nunique() < 2:
            first = values.iloc[0].item() if isinstance(values.iloc[0], np.generic) else values.iloc[0]
            what = f"the single value {first!r}" if len(values) else "no values"
            raise InputError([Problem("data.target", f"target {target!r} has {what} in {len(table.frame)} rows; "
                                      f"a model needs at least two classes (or distinct values) to learn from")])
    return table, notes


def _kind(value: Any) -> str:
    return "mappings" if isinstance(value, dict) else "sets" if isinstance(value, set) else "lists"
