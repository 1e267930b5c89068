"""Robust feature scaling: scikit-learn's ``RobustScaler`` (median and quantile range)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, model_validator

from forgeline.core import Cleaner, CleanResult, InputError, Modality, Params, StageContext, Table

from ._columns import (column_stats, no_rows_removed, numeric_block, replace_columns, require_finite,
                       require_not_all_missing, require_numeric, require_rows, select_columns)
from ._partitions import NumericBlock, ObservedAndFinite, empty_table, require_partition_rows

if TYPE_CHECKING:  # pragma: no cover
    from forgeline.core.partitioned import Partitioned


class RobustScaleParams(Params):
    quantile_range: tuple[float, float] = Field((25.0, 75.0), description="percentiles whose distance "
                                                "is the scale (0 < low < high < 100)")
    with_centering: bool = Field(True, description="subtract the training median")
    with_scaling: bool = Field(True, description="divide by the training quantile range")
    unit_variance: bool = Field(False, description="rescale so normally distributed data gets variance 1")
    columns: list[str] | None = Field(None, description="numeric columns to scale (None = every numeric "
                                      "feature)")

    @model_validator(mode="after")
    def _ordered_range(self) -> RobustScaleParams:
        lo, hi = self.quantile_range
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"quantile_range must satisfy 0 <= low < high <= 100, got {list(self.quantile_range)}")
        return self


class RobustScale(Cleaner):
    """Centres numeric features on the training median and scales by the interquartile range.

    Fitting is scikit-learn's ``RobustScaler`` on the training split; applying reuses its
    ``center_``/``scale_`` on any split. No row is removed and nothing is flagged. An infinite
    value is an error naming the column (sigma-outliers before it clips or drops them).
    """

    name = "robust-scale"
    Params = RobustScaleParams
    modalities = frozenset({Modality.NUMERIC})

    def fit(self, table: Table, ctx: StageContext | None = None) -> RobustScale:
        from sklearn.preprocessing import RobustScaler

        require_rows(table, self.name)
        cols = select_columns(table, self.params.columns, self.modalities, self.name)
        require_numeric(table.frame, cols, self.name)
        require_not_all_missing(table.frame, cols, self.name)
        # column-major so that RobustScaler's per-column percentiles read contiguous memory
        X = np.asfortranarray(numeric_block(table.frame, cols))
        require_finite(X, cols, table.row_ids, self.name)
        p = self.params
        self.scaler_ = RobustScaler(quantile_range=tuple(p.quantile_range), with_centering=p.with_centering,
                                    with_scaling=p.with_scaling, unit_variance=p.unit_variance,
                                    copy=False).fit(X)
        self.columns_ = cols
        return self

    def fit_partitions(self, parts: Partitioned, ctx: StageContext | None = None) -> RobustScale:
        """Engine dask: ``RobustScaler``'s centre (median) and scale (quantile range) computed
        exactly by ``exact_quantiles`` over the partitions, set on a ``RobustScaler``."""
        from sklearn.preprocessing import RobustScaler
        from sklearn.preprocessing._data import _handle_zeros_in_scale
        from scipy.stats import norm

        from forgeline.core.partitioned import exact_quantiles

        require_partition_rows(parts, self.name)
        shape = empty_table(parts)
        cols = select_columns(shape, self.params.columns, self.modalities, self.name)
        require_numeric(shape.frame, cols, self.name)
        p = self.params
        lo, hi = p.quantile_range
        median, q_lo, q_hi = exact_quantiles(parts, NumericBlock(tuple(cols)), [0.5, lo / 100, hi / 100],
                                             check=ObservedAndFinite(parts, tuple(cols), self.name, finite=True))
        scaler = RobustScaler(quantile_range=tuple(p.quantile_range), with_centering=p.with_centering,
                              with_scaling=p.with_scaling, unit_variance=p.unit_variance, copy=False)
        scaler.center_ = median if p.with_centering else None
        scale = None
        if p.with_scaling:
            scale = _handle_zeros_in_scale(q_hi - q_lo, copy=False)
            if p.unit_variance:
                scale = scale / (norm.ppf(hi / 100.0) - norm.ppf(lo / 100.0))
        scaler.scale_, scaler.n_features_in_ = scale, len(cols)
        self.scaler_, self.columns_ = scaler, cols
        return self

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        for c in self.columns_:
            if c not in table.frame.columns:
                raise InputError(f"{self.name}: column {c!r} was fitted but is not in this table")
        require_numeric(table.frame, self.columns_, self.name)
        X = numeric_block(table.frame, self.columns_)
        require_finite(X, self.columns_, table.row_ids, self.name)
        before = column_stats(X, self.columns_)
        # the same arithmetic as RobustScaler.transform, in place on our own copy
        if self.scaler_.center_ is not None:
            X -= self.scaler_.center_
        if self.scaler_.scale_ is not None:
            X /= self.scaler_.scale_
        report: dict[str, Any] = {
            "rows_in": len(table), "quantile_range": list(self.params.quantile_range),
            "center": ({c: float(v) for c, v in zip(self.columns_, self.scaler_.center_)}
                       if self.scaler_.center_ is not None else None),
            "scale": ({c: float(v) for c, v in zip(self.columns_, self.scaler_.scale_)}
                      if self.scaler_.scale_ is not None else None),
            "before": before, "after": column_stats(X, self.columns_),
        }
        kept = table.with_frame(replace_columns(table.frame, self.columns_, X))
        return CleanResult(table=kept, removed=no_rows_removed(table.frame), report=report)
