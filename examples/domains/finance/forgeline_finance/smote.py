"""``smote-defaults``: oversample the minority class (defaults) with SMOTE-NC, then jitter numbers.

imbalanced-learn's SMOTENC interpolates numeric features between a minority row and one of
its minority neighbours and takes categorical values by majority among the neighbours (plain
SMOTE when there are no categorical features). Text and other columns are copied from the
source row. Gaussian noise (``noise`` x the column's standard deviation) is then added to the
numeric fields, with integer columns rounded back, so synthetic rows are not exact
interpolations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from forgeline.core import Augmenter, InputError, Modality, Params, Problem, StageContext, Table

from ._context import stage_context


class SmoteDefaults(Augmenter):
    """SMOTE-NC oversampling of the minority class (defaults) with noise on numeric fields."""

    name = "smote-defaults"
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL, Modality.TEXT})

    class Params(Params):
        minority: int | str | None = Field(None, description="label to oversample (None: the least frequent class)")
        ratio: float = Field(0.5, gt=0, le=1, description="minority / majority row ratio after oversampling")
        k_neighbors: int = Field(5, ge=1, description="minority neighbours SMOTE interpolates towards")
        noise: float = Field(0.02, ge=0, description="std of the Gaussian noise on numeric fields, "
                             "as a share of each column's standard deviation (0: none)")

    def augment(self, table: Table, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        ctx = stage_context(self, ctx)
        y = table.y
        if y is None:
            raise InputError([Problem("augment", "smote-defaults needs a target column (data.target)")])
        counts = y.value_counts()
        minority = self.params.minority if self.params.minority is not None else counts.idxmin()
        n_min, n_max = int(counts.get(minority, 0)), int(counts.drop(minority, errors="ignore").max())
        want = int(self.params.ratio * n_max) - n_min
        if want <= 0 or n_min < 2:
            return table.take([])
        num = [c for c in table.schema.features(Modality.NUMERIC) if c in table.frame.columns]
        cat = [c for c in table.schema.features(Modality.CATEGORICAL) if c in table.frame.columns]
        if not num:
            raise InputError([Problem("augment", "smote-defaults needs at least one numeric feature; "
                                      f"features: {table.schema.features()}")])
        X = self._design(table.frame, num, cat)
        synthetic = self._resample(X, y, minority, n_min + want, len(cat), ctx.seed)
        sources = self._sources(X, y == minority, synthetic, num, table.row_ids)
        rng = np.random.default_rng(ctx.seed)
        frame = table.frame.loc[sources].copy()  # text and other columns from the source row
        for c in num:
            values = synthetic[c].to_numpy(np.float64)
            if self.params.noise:
                values = values + rng.normal(0, self.params.noise * np.nanstd(X[c]), len(values))
            original = table.frame[c]
            if pd.api.types.is_integer_dtype(original):
                values = np.round(values)
            frame[c] = values.astype(original.dtype)
        for c in cat:
            frame[c] = pd.Series(synthetic[c].to_numpy(), index=frame.index).astype(table.frame[c].dtype)
        frame[table.target] = minority
        frame[table.target] = frame[table.target].astype(y.dtype)
        return Table(frame, table.schema, {k: v[table.positions(sources)] for k, v in table.arrays.items()},
                     table.meta)

    @staticmethod
    def _design(frame: Any, num: list[str], cat: list[str]) -> Any:
        """Numeric columns (missing values -> the column median: SMOTE cannot interpolate NaN)
        and categorical columns as strings."""
        X = frame[num].astype(float)
        X = X.fillna(X.median()).fillna(0.0)
        for c in cat:
            X[c] = frame[c].astype(str)
        return X

    def _resample(self, X: Any, y: Any, minority: Any, target_count: int, n_cat: int, seed: int) -> Any:
        from imblearn.over_sampling import SMOTE, SMOTENC

        k = min(self.params.k_neighbors, int((y == minority).sum()) - 1)
        strategy = {minority: target_count}
        sampler = (SMOTENC(categorical_features=list(range(X.shape[1] - n_cat, X.shape[1])),
                           sampling_strategy=strategy, k_neighbors=k, random_state=seed % 2 ** 32)
                   if n_cat else SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=seed % 2 ** 32))
        Xr, _ = sampler.fit_resample(X, y.to_numpy())
        return Xr.iloc[len(X):]  # imbalanced-learn appends the synthetic rows after the originals

    @staticmethod
    def _sources(X: Any, is_min: Any, synthetic: Any, num: list[str], row_ids: np.ndarray) -> np.ndarray:
        """The row id each synthetic row is recorded as made from: imbalanced-learn does not
        return it, so the nearest minority row (standardised numeric space) stands in."""
        from sklearn.neighbors import NearestNeighbors

        base = X.loc[is_min.to_numpy(), num].to_numpy(float)
        scale = base.std(axis=0)
        scale[scale == 0] = 1.0
        nn = NearestNeighbors(n_neighbors=1).fit(base / scale)
        idx = nn.kneighbors(synthetic[num].to_numpy(float) / scale, return_distance=False)[:, 0]
        return row_ids[is_min.to_numpy()][idx]
