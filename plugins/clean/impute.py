"""Missing values: a simple fill (median, mean, most frequent, constant) with indicator columns,
or multiple imputation with scikit-learn's ``IterativeImputer(sample_posterior=True)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import (Cleaner, CleanResult, ColumnSpec, InputError, Modality, Params, Role,
                            StageContext, Table)

from ._columns import (column_stats, no_rows_removed, numeric_block, require_not_all_missing,
                       require_numeric, require_rows, select_columns)
from ._partitions import NumericBlock, empty_table, modes, require_observed, require_partition_rows

if TYPE_CHECKING:  # pragma: no cover
    from forgeline.core.partitioned import Partitioned

INDICATOR_SUFFIX = "__imputed"


class ImputeParams(Params):
    strategy: Literal["median", "mean", "most-frequent", "constant"] = Field(
        "median", description="fill for numeric columns (categorical columns always use most-frequent, "
        "or fill_category when strategy is constant)")
    fill_value: float = Field(0.0, description="numeric fill when strategy is constant")
    fill_category: str = Field("missing", description="categorical fill when strategy is constant")
    multiple: int = Field(1, ge=1, le=100, description="m > 1: multiple imputation of the numeric columns "
                          "with IterativeImputer(sample_posterior=True) run m times, pooled by the mean")
    max_iter: int = Field(10, ge=1, description="rounds of IterativeImputer per imputation (multiple > 1)")
    indicators: bool = Field(True, description="add a 0/1 feature <col>__imputed for every column that "
                             "had missing values in training")
    columns: list[str] | None = Field(None, description="columns to impute (None = every numeric and "
                                      "categorical feature)")


class Impute(Cleaner):
    """Fills missing values (median by default), optionally by pooled multiple imputation.

    With ``multiple: m`` the numeric columns are completed m times by
    ``IterativeImputer(sample_posterior=True)`` (each with its own seed) and the m completed
    tables are **pooled** (cell-wise mean) into the one table that goes on to training; the
    report gives the between-imputation variance of the filled cells per column (how much the
    m draws disagree). Statistics and imputers are fitted on the training split only. No row
    is removed; ``flagged`` holds the rows that had a missing value.
    """

    name = "impute"
    Params = ImputeParams
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL})
    detects = "missing"

    def fit(self, table: Table, ctx: StageContext | None = None) -> Impute:
        require_rows(table, self.name)
        cols = select_columns(table, self.params.columns, self.modalities, self.name)
        frame = table.frame
        require_not_all_missing(frame, cols, self.name)
        numeric = [c for c in cols if table.schema[c].modality == Modality.NUMERIC]
        require_numeric(frame, numeric, self.name)
        categorical = [c for c in cols if c not in set(numeric)]
        self.numeric_, self.categorical_ = numeric, categorical
        X = numeric_block(frame, numeric)
        strategy = self.params.strategy
        if strategy == "median":
            fill = np.nanmedian(X, axis=0)
        elif strategy == "mean":
            fill = np.nanmean(X, axis=0)
        elif strategy == "constant":
            fill = np.full(len(numeric), self.params.fill_value)
        else:
            fill = np.array([frame[c].mode(dropna=True).iloc[0] for c in numeric], dtype=np.float64)
        self.fill_ = fill
        self.category_fill_ = {c: (self.params.fill_category if strategy == "constant"
                                   else frame[c].mode(dropna=True).iloc[0]) for c in categorical}
        had_missing = frame[cols].isna().any()
        self.indicator_columns_ = [c for c in cols if had_missing[c]] if self.params.indicators else []
        self.imputers_: list[Any] = []
        if self.params.multiple > 1 and numeric:
            from sklearn.experimental import enable_iterative_imputer  # noqa: F401
            from sklearn.impute import IterativeImputer

            seed = self.using(ctx).seed
            self.imputers_ = [IterativeImputer(sample_posterior=True, max_iter=self.params.max_iter,
                                               random_state=seed + i, keep_empty_features=True).fit(X)
                              for i in range(self.params.multiple)]
        return self

    def fit_partitions(self, parts: Partitioned, ctx: StageContext | None = None) -> Impute:
        """Engine dask: the fills by passes over the partitions: mean exact (two passes), median
        exact (``exact_quantiles``), most frequent from value counts summed over partitions."""
        from forgeline.core.partitioned import exact_quantiles, moments

        require_partition_rows(parts, self.name)
        shape = empty_table(parts)
        cols = select_columns(shape, self.params.columns, self.modalities, self.name)
        observed = require_observed(parts, cols, self.name)
        numeric = [c for c in cols if shape.schema[c].modality == Modality.NUMERIC]
        require_numeric(shape.frame, numeric, self.name)
        categorical = [c for c in cols if c not in set(numeric)]
        self.numeric_, self.categorical_ = numeric, categorical
        strategy, block = self.params.strategy, NumericBlock(tuple(numeric))
        if strategy == "median":
            fill = exact_quantiles(parts, block, [0.5])[0]
        elif strategy == "mean":
            fill = moments(parts, block)[1]
        elif strategy == "constant":
            fill = np.full(len(numeric), self.params.fill_value)
        else:
            found = modes(parts, numeric)
            fill = np.array([found[c] for c in numeric], dtype=np.float64)
        self.fill_ = fill
        found = modes(parts, categorical) if strategy != "constant" else {}
        self.category_fill_ = {c: found.get(c, self.params.fill_category) for c in categorical}
        rows = parts.rows()
        self.indicator_columns_ = [c for c in cols if observed[c] < rows] if self.params.indicators else []
        self.imputers_ = []
        return self

    def partitions_refusal(self) -> str | None:
        if self.params.multiple > 1:
            return ("multiple imputation (multiple > 1) fits IterativeImputer on the whole split in memory; "
                    "use multiple: 1 or engine: pandas")
        return None

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        import pandas as pd

        cols = self.numeric_ + self.categorical_
        for c in cols:
            if c not in table.frame.columns:
                raise InputError(f"{self.name}: column {c!r} was fitted but is not in this table")
        require_numeric(table.frame, self.numeric_, self.name)
        frame = table.frame
        miss = frame[cols].isna()
        X = numeric_block(frame, self.numeric_)
        nan = np.isnan(X)
        before = column_stats(X, self.numeric_)
        report: dict[str, Any] = {"strategy": self.params.strategy, "multiple": self.params.multiple}
        if self.imputers_:
            draws = np.stack([imp.transform(X) for imp in self.imputers_])
            filled = draws.mean(axis=0)  # pooling: the cell-wise mean of the m completed tables
            with np.errstate(invalid="ignore"):
                between = np.where(nan, draws.var(axis=0, ddof=1), np.nan)
            report["pooling"] = "mean of the m completed tables"
            report["between_imputation_variance"] = {
                c: (float(np.nanmean(between[:, j])) if nan[:, j].any() else 0.0)
                for j, c in enumerate(self.numeric_)}
        else:
            filled = np.where(nan, self.fill_, X)
            report["fill_values"] = {c: float(v) for c, v in zip(self.numeric_, self.fill_)}
        new = {c: filled[:, j] for j, c in enumerate(self.numeric_)}
        for c in self.categorical_:
            s = frame[c]
            value = self.category_fill_[c]
            if isinstance(s.dtype, pd.CategoricalDtype) and value not in s.cat.categories:
                s = s.cat.add_categories([value])
            new[c] = s.fillna(value)
        for c in self.indicator_columns_:
            new[c + INDICATOR_SUFFIX] = miss[c].to_numpy().astype(np.int8)
        out = pd.concat([frame.drop(columns=cols), pd.DataFrame(new, index=frame.index)], axis=1)
        out = out[list(frame.columns) + [c + INDICATOR_SUFFIX for c in self.indicator_columns_]]
        schema = table.schema.with_columns(
            ColumnSpec(c + INDICATOR_SUFFIX, Role.FEATURE, Modality.NUMERIC) for c in self.indicator_columns_)
        row_missing = miss.to_numpy().any(axis=1)
        report.update({
            "rows_in": len(table), "rows_with_missing": int(row_missing.sum()),
            "filled_per_column": {c: int(n) for c, n in miss.sum().items()},
            "indicator_columns": [c + INDICATOR_SUFFIX for c in self.indicator_columns_],
            "categorical_fill": {c: str(v) for c, v in self.category_fill_.items()},
            "before": before, "after": column_stats(filled, self.numeric_),
        })
        return CleanResult(table=table.with_frame(out, schema), removed=no_rows_removed(frame),
                           flagged=table.row_ids[row_missing], report=report)
