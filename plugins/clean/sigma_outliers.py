"""Outlier detection by the 3-sigma rule (or its robust median/MAD variant), per numeric column."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from forgeline.core import Cleaner, CleanResult, Modality, Params, StageContext, Table

from ._columns import (column_stats, nan_moments, no_rows_removed, numeric_block, removed_rows,
                       replace_columns, require_not_all_missing, require_numeric, require_rows, require_some_values,
                       select_columns)
from ._partitions import AbsDeviation, NumericBlock, ObservedAndFinite, empty_table, require_partition_rows

if TYPE_CHECKING:  # pragma: no cover
    from forgeline.core.partitioned import Partitioned

#: MAD * 1.4826 estimates the standard deviation of normally distributed data
MAD_TO_STD = 1.4826


class SigmaOutliersParams(Params):
    k: float = Field(3.0, gt=0, description="a value is an outlier when |x - centre| > k * spread")
    robust: bool = Field(False, description="centre = median and spread = 1.4826 * MAD instead of mean and std")
    action: Literal["flag", "clip", "drop"] = Field(
        "clip", description="flag: only report; clip: move outliers to the k-sigma bound; "
        "drop: remove rows with any outlier (to quarantine)")
    columns: list[str] | None = Field(None, description="numeric columns to check (None = every numeric feature)")


class SigmaOutliers(Cleaner):
    """Flags, clips or drops values more than k standard deviations from the training mean.

    Centre and spread are fitted on the training split only and reused on every other split.
    Columns with zero spread in training are never flagged (every deviation would count).
    Missing values are left alone (they are the imputer's job). +inf and -inf are outliers of
    their column whatever the bounds (the fit ignores them): flagged, clipped to the bound on
    their side (the training centre in a zero-spread column) or dropped, and counted in the
    report under ``infinite_values``.
    """

    name = "sigma-outliers"
    Params = SigmaOutliersParams
    modalities = frozenset({Modality.NUMERIC})
    detects = "outlier"

    def fit(self, table: Table, ctx: StageContext | None = None) -> SigmaOutliers:
        require_rows(table, self.name)
        cols = select_columns(table, self.params.columns, self.modalities, self.name)
        require_numeric(table.frame, cols, self.name)
        require_not_all_missing(table.frame, cols, self.name)
        X = numeric_block(table.frame, cols)
        X[np.isinf(X)] = np.nan  # the statistics of the finite values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a single observed value: std is 0
            if self.params.robust:
                centre = np.nanmedian(X, axis=0)
                spread = MAD_TO_STD * np.nanmedian(np.abs(X - centre), axis=0)
            else:
                _, centre, spread = nan_moments(X, ddof=1)
        self.columns_ = cols
        self.centre_ = centre
        self.spread_ = np.nan_to_num(spread, nan=0.0)
        return self

    def fit_partitions(self, parts: Partitioned, ctx: StageContext | None = None) -> SigmaOutliers:
        """Engine dask: the same statistics by passes over the partitions: mean and std exact
        (two passes), median and MAD exact (``exact_quantiles``: two passes each)."""
        from forgeline.core.partitioned import exact_quantiles, moments

        require_partition_rows(parts, self.name)
        shape = empty_table(parts)
        cols = select_columns(shape, self.params.columns, self.modalities, self.name)
        require_numeric(shape.frame, cols, self.name)
        finite = NumericBlock(tuple(cols), finite=True)
        if self.params.robust:
            centre = exact_quantiles(parts, finite, [0.5], check=ObservedAndFinite(parts, tuple(cols), self.name))[0]
            spread = MAD_TO_STD * exact_quantiles(parts, AbsDeviation(tuple(cols), tuple(centre)), [0.5])[0]
        else:
            count, centre, spread = moments(parts, finite, ddof=1)
            require_some_values(count, cols, self.name)
        self.columns_, self.centre_, self.spread_ = cols, centre, np.nan_to_num(spread, nan=0.0)
        return self

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        cols = self.columns_
        missing = [c for c in cols if c not in table.frame.columns]
        if missing:
            from forgeline.core import InputError
            raise InputError(f"{self.name}: column {missing[0]!r} was fitted but is not in this table")
        require_numeric(table.frame, cols, self.name)
        X = numeric_block(table.frame, cols)
        usable = self.spread_ > 0
        half = np.where(usable, self.params.k * self.spread_, np.inf)
        lo, hi = self.centre_ - half, self.centre_ + half
        # NaN compares false on both sides, so missing values are never outliers
        inf = np.isinf(X)
        low, high = X < lo, X > hi
        out = low | high | inf
        row_out = out.any(axis=1)
        flagged = table.row_ids[row_out]
        before = column_stats(X, cols)
        action = self.params.action
        frame, removed = table.frame, no_rows_removed(table.frame)
        if action == "clip":
            np.clip(X, lo, hi, out=X)
            still = np.isinf(X)  # zero-spread columns have infinite bounds: their centre instead
            X[still] = np.broadcast_to(self.centre_, X.shape)[still]
            frame = replace_columns(table.frame, cols, X)
            after_values = X
        elif action == "drop":
            removed = removed_rows(table.frame, row_out, self._reasons(out, row_out, cols))
            frame = table.frame.loc[~row_out]
            after_values = X[~row_out]
        else:
            after_values = X
        kept = table.with_frame(frame) if action != "drop" else table.take_mask(~row_out)
        per_col = out.sum(axis=0)
        report = {
            "action": action, "k": self.params.k, "robust": self.params.robust,
            "rows_in": len(table), "rows_with_outliers": int(row_out.sum()),
            "rows_removed": len(removed), "values_flagged": int(per_col.sum()),
            "outliers_per_column": {c: int(n) for c, n in zip(cols, per_col)},
            "infinite_values": {c: int(n) for c, n in zip(cols, inf.sum(axis=0)) if n},
            "bounds": {c: [float(a), float(b)] for c, a, b in zip(cols, lo, hi)},
            "constant_columns_skipped": [c for c, u in zip(cols, usable) if not u],
            "before": before,
            "after": column_stats(after_values, cols) if action != "flag" else before,
        }
        return CleanResult(table=kept, removed=removed, flagged=flagged, report=report)

    @staticmethod
    def _reasons(out: np.ndarray, row_out: np.ndarray, cols: list[str]) -> np.ndarray:
        """'outlier in a, b' for each dropped row (only built for the rows that go)."""
        reasons = np.empty(len(row_out), dtype=object)
        names = np.array(cols, dtype=object)
        for i in np.flatnonzero(row_out):
            reasons[i] = "outlier in " + ", ".join(map(str, names[out[i]]))
        return reasons
