"""Whole-split statistics for the built-in cleaners on engine dask (passes over partitions).

Each helper is one or a few passes of :meth:`Partitioned.reduce` over the training split's
partitions, returning what the pandas ``fit`` computes from the whole table. The per-partition
functions are small frozen dataclasses, so they travel to the workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from forgeline.core import ROW_ID, InputError, Table
from forgeline.core.partitioned import NumericBlock

from ._columns import infinite_values, numeric_block, require_some_values

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from forgeline.core.partitioned import Partitioned, Profile


def empty_table(parts: Partitioned) -> Table:
    """The split's columns and schema without rows (for column selection and dtype checks)."""
    meta = parts.frame._meta.copy()
    meta.index.name = ROW_ID
    return Table(meta, parts.schema)


def require_partition_rows(parts: Partitioned, stage: str) -> int:
    rows = parts.rows()
    if rows == 0:
        raise InputError(f"{stage}: the table is empty (0 rows); it needs at least one row")
    return rows


@dataclass(frozen=True)
class AbsDeviation:
    """|x - centre| of the numeric columns (infinities as missing)."""

    columns: tuple[str, ...]
    centre: tuple[float, ...]

    def __call__(self, table: Table) -> np.ndarray:
        return np.abs(NumericBlock(self.columns, finite=True)(table) - np.asarray(self.centre))


def observed_counts(parts: Partitioned, columns: list[str]) -> pd.Series:
    """Observed (non-missing) values per column over the whole split."""
    return sum(parts.reduce(_Observed(tuple(columns))))


@dataclass(frozen=True)
class _Observed:
    columns: tuple[str, ...]

    def __call__(self, table: Table) -> pd.Series:
        return table.frame[list(self.columns)].notna().sum()

    def from_profile(self, profile: Profile) -> pd.Series | object:
        import pandas as pd

        if not set(self.columns) <= profile.observed.keys():
            return NotImplemented
        return pd.Series({c: profile.observed[c] for c in self.columns}, dtype=np.int64)


def require_observed(parts: Partitioned, columns: list[str], stage: str) -> pd.Series:
    """``require_not_all_missing`` over the whole split; returns the observed counts."""
    counts = observed_counts(parts, columns)
    require_some_values(counts.to_numpy(), columns, stage)
    return counts


@dataclass(frozen=True)
class ObservedAndFinite:
    """A check for ``exact_quantiles``: every column has a value (and, with ``finite``, no
    infinite one), from the counts and ranges of its first pass (no pass of its own)."""

    parts: Partitioned
    columns: tuple[str, ...]
    stage: str
    finite: bool = False

    def __call__(self, count: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        require_some_values(count, list(self.columns), self.stage)
        if self.finite and (np.isinf(low).any() or np.isinf(high).any()):
            require_finite_partitions(self.parts, list(self.columns), self.stage)


def modes(parts: Partitioned, columns: list[str]) -> dict[str, object]:
    """Each column's most frequent value over the split (the smallest on a tie, as pandas'
    ``Series.mode``): value counts per partition, summed."""
    import pandas as pd

    if not columns:
        return {}
    per_part = parts.reduce(_Counts(tuple(columns)))
    out = {}
    for c in columns:
        counts = pd.concat([p[c] for p in per_part]).groupby(level=0, sort=True).sum()
        out[c] = counts.index[int(np.argmax(counts.to_numpy()))]
    return out


@dataclass(frozen=True)
class _Counts:
    columns: tuple[str, ...]

    def __call__(self, table: Table) -> dict[str, pd.Series]:
        return {c: table.frame[c].value_counts(dropna=True) for c in self.columns}


def require_finite_partitions(parts: Partitioned, columns: list[str], stage: str) -> None:
    """``require_finite`` over the whole split: the first infinite value's column and row id."""
    found = [r for r in parts.reduce(_Infinite(tuple(columns))) if r is not None]
    if found:
        j = min(j for j, _, _ in found)
        total = sum(n for jj, n, _ in found if jj == j)
        first = min(row for jj, _, row in found if jj == j)
        raise infinite_values(stage, columns[j], f"{total}+", first)  # + : counted where it came first


@dataclass(frozen=True)
class _Infinite:
    columns: tuple[str, ...]

    def __call__(self, table: Table) -> tuple[int, int, int] | None:
        inf = np.isinf(numeric_block(table.frame, list(self.columns)))
        if not inf.any():
            return None
        j = int(np.flatnonzero(inf.any(axis=0))[0])
        return j, int(inf[:, j].sum()), int(table.row_ids[np.flatnonzero(inf[:, j])[0]])
