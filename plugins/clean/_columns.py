"""Column selection, input checks and bookkeeping shared by the built-in cleaners.

Every check raises :class:`~forgeline.core.InputError` with one line that names the stage,
the column and what would be right, so a user can fix the input without reading code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from forgeline.core import InputError, Modality, Table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def require_rows(table: Table, stage: str) -> None:
    """An empty table cannot be fitted or cleaned."""
    if len(table) == 0:
        raise InputError(f"{stage}: the table is empty (0 rows); it needs at least one row")


def select_columns(table: Table, columns: list[str] | None, modalities: Iterable[Modality],
                   stage: str) -> list[str]:
    """The columns a cleaner works on: the ones named, or every feature column of ``modalities``.

    Named columns must exist in the frame and must not be the target (cleaners never change
    the target except by relabelling, which has its own stage).
    """
    mods = frozenset(modalities)
    if columns is None:
        return [c for c in table.schema.features(mods) if c in table.frame.columns]
    for col in columns:
        if col not in table.frame.columns:
            known = ", ".join(map(str, table.frame.columns[:12]))
            raise InputError(f"{stage}: column {col!r} is not in the table (columns: {known})")
        if col == table.target:
            raise InputError(f"{stage}: column {col!r} is the target; name feature columns only")
    return list(columns)


def require_numeric(frame: pd.DataFrame, columns: list[str], stage: str) -> None:
    """Every column must hold numbers (not text parsed later, not booleans as categories)."""
    import pandas as pd

    for col in columns:
        s = frame[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            raise InputError(f"{stage}: column {col!r} has dtype {s.dtype}, a numeric column is needed "
                             f"(convert it to numbers or leave it out of 'columns')")


def require_not_all_missing(frame: pd.DataFrame, columns: list[str], stage: str) -> None:
    """A column with no observed value has no statistics to fit."""
    require_some_values(frame[columns].notna().sum().to_numpy(), columns, stage)


def require_some_values(count: np.ndarray, columns: list[str], stage: str) -> None:
    """``count[j]`` observed values of ``columns[j]``: none means no statistics to fit."""
    for col, n in zip(columns, count):
        if n == 0:
            raise InputError(f"{stage}: column {col!r} is entirely missing; it needs at least one "
                             f"observed value (drop the column or leave it out of 'columns')")


def numeric_block(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as one float64 array (a fresh copy: callers may change it in place)."""
    return frame[columns].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


def replace_columns(frame: pd.DataFrame, columns: list[str], values: np.ndarray) -> pd.DataFrame:
    """A new frame: ``frame`` with ``columns`` replaced by ``values`` (the input is not changed).

    Building the replaced block as one frame and concatenating once is much faster on wide
    frames than assigning column by column.
    """
    import pandas as pd

    block = pd.DataFrame(values, index=frame.index, columns=columns, copy=False)
    rest = [c for c in frame.columns if c not in set(columns)]
    out = pd.concat([frame[rest], block], axis=1) if rest else block
    return out[list(frame.columns)]


def plain(value):
    """A numpy scalar as the Python value it holds (``0``, not ``np.int64(0)``) for messages."""
    return value.item() if isinstance(value, np.generic) else value


def require_finite(values: np.ndarray, columns: list[str], row_ids: np.ndarray, stage: str) -> None:
    """Every value must be finite or missing (scaling an infinity gives no usable number)."""
    inf = np.isinf(values)
    if inf.any():
        j = int(np.flatnonzero(inf.any(axis=0))[0])
        raise infinite_values(stage, columns[j], str(int(inf[:, j].sum())), row_ids[np.flatnonzero(inf[:, j])[0]])


def infinite_values(stage: str, column: str, count: str, first: object) -> InputError:
    """The error for a column with infinite values where finite numbers are needed."""
    return InputError(f"{stage}: column {column!r} has {count} infinite values (first at row id {plain(first)}); "
                      f"finite numbers are needed: clip or drop them first (sigma-outliers with action clip or "
                      f"drop) or fix the input")


def removed_rows(frame: pd.DataFrame, mask: np.ndarray, reasons: np.ndarray | str) -> pd.DataFrame:
    """The rows where ``mask`` is true, as they came in, with a ``reason`` column."""
    out = frame.loc[mask].copy()
    out["reason"] = reasons if isinstance(reasons, str) else np.asarray(reasons)[mask]
    return out


def no_rows_removed(frame: pd.DataFrame) -> pd.DataFrame:
    """An empty ``removed`` frame with the input's columns plus ``reason``."""
    out = frame.iloc[:0].copy()
    out["reason"] = np.array([], dtype=object)
    return out


def nan_moments(values: np.ndarray, ddof: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column (observed count, mean, std) ignoring NaN.

    numpy's nanmean/nanstd copy the whole array to replace NaN; summing with ``where=`` over
    the observed cells does the same arithmetic without the copies (2-3x faster at 1M x 20).
    """
    observed = ~np.isnan(values)
    count = observed.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.add.reduce(values, axis=0, where=observed) / count
        dev = values - mean
        np.multiply(dev, dev, out=dev)
        var = np.add.reduce(dev, axis=0, where=observed) / np.maximum(count - ddof, 0)
    return count, mean, np.sqrt(var)


def column_stats(values: np.ndarray, columns: list[str]) -> dict[str, dict[str, float]]:
    """Per-column mean, std, min, max and missing count, for before/after reports."""
    count, mean, std = nan_moments(values)
    empty = np.full(len(columns), np.nan)
    # fmin/fmax skip NaN without copying the array
    lo = np.fmin.reduce(values, axis=0) if len(values) else empty
    hi = np.fmax.reduce(values, axis=0) if len(values) else empty
    stats = {"mean": mean, "std": std, "min": lo, "max": hi, "missing": len(values) - count}
    return {col: {k: float(v[j]) for k, v in stats.items()} for j, col in enumerate(columns)}


def lookup_sorted(sorted_keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each of ``values`` is in ``sorted_keys`` (ascending), and where: a binary search.
    ``np.isin`` sorts or hashes the keys again on every call; on engine dask the keys are a
    whole split's suspects or judged rows, hundreds of thousands, asked once per partition."""
    if not len(sorted_keys):
        return np.zeros(len(values), bool), np.zeros(len(values), np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values, at
