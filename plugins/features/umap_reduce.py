"""``umap``: umap-learn's UMAP embedding of all features or a named group of them.

Fitted on the training rows only; ``transform`` places new rows into that embedding
(umap-learn's out-of-sample ``transform``). The group's columns are replaced by
``<prefix>0 .. <prefix>{n-1}``; the other columns pass through unless ``keep_others`` is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from forgeline.core import Modality, Params, Schema, StageContext

from ._base import FeatureInputError, FeatureStep, check_count, numeric_matrix

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class UmapParams(Params):
    group: list[str] | str | None = Field(None, description="features to embed: a list of columns, a "
                                          "modality (e.g. numeric) or a column-name prefix (None: all features)")
    n_components: int = Field(2, ge=1, description="dimensions of the embedding")
    n_neighbors: int = Field(15, ge=2, description="size of the local neighbourhood UMAP preserves")
    min_dist: float = Field(0.1, ge=0, description="how tightly points may pack in the embedding")
    metric: str = Field("euclidean", description="umap-learn distance metric (euclidean, manhattan, cosine, ...)")
    impute: bool = Field(True, description="fill missing values with the training median (False: they are an error)")
    keep_others: bool = Field(True, description="pass the columns outside the group through unchanged")
    prefix: str = Field("umap_", min_length=1, description="name prefix of the embedding columns")
    random_state: int | None = Field(None, description="seed of UMAP (None: the run's seed); a seed makes "
                                     "umap-learn run single-threaded")


class Umap(FeatureStep):
    """Replace all features, or a named group of them, by their UMAP embedding learnt on training rows."""

    name = "umap"
    Params = UmapParams
    modalities = frozenset({Modality.NUMERIC})

    def _fit(self, X: pd.DataFrame, y: np.ndarray | None, schema: Schema, ctx: StageContext) -> None:
        p = self.params
        group = resolve_group(self.name, p.group, schema)
        values = numeric_matrix(X, group, self.name)
        check_count(self.name, "n_components", p.n_components, len(group), "feature(s) in the group")
        self.medians_ = _medians(values, group, self.name) if p.impute else np.full(len(group), np.nan)
        # the fitted state is the (filled) training matrix and the seed: UMAP itself is no data
        # (numba functions, a search index), so a saved run refits it, identically, when loaded
        self.train_values_, self.seed_ = self._filled(values, group), self._seed(ctx)
        self._umap = self._fit_umap()
        self.group_ = group
        names = [f"{p.prefix}{i}" for i in range(p.n_components)]
        others = [str(c) for c in X.columns if str(c) not in set(group)] if p.keep_others else []
        clash = set(others) & set(names)
        if clash:
            raise FeatureInputError(f"{self.name}: output columns {sorted(clash)} already exist; set another 'prefix'")
        self.features_out_ = others + names
        self.modalities_out_ = [str(schema[c].modality) for c in others] + [str(Modality.NUMERIC)] * len(names)
        self.needed_columns_ = others + group

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        values = self._filled(numeric_matrix(X, self.group_, self.name), self.group_)
        embedded = self._model().transform(values) if len(values) else np.empty((0, self.params.n_components))
        names = self.features_out_[len(self.features_out_) - self.params.n_components:]
        block = pd.DataFrame(embedded, index=X.index, columns=names)
        others = self.features_out_[:len(self.features_out_) - len(names)]
        return pd.concat([X[others], block], axis=1) if others else block

    def _fit_umap(self) -> Any:
        import umap  # after the input checks: a bad group fails fast, without umap's import time

        p, rows = self.params, len(self.train_values_)
        return umap.UMAP(n_components=p.n_components, n_neighbors=min(p.n_neighbors, max(2, rows - 1)),
                         min_dist=p.min_dist, metric=p.metric, random_state=self.seed_,
                         n_jobs=1).fit(self.train_values_)  # a seed means one thread anyway

    def _model(self) -> Any:
        """The fitted UMAP, refitted from the saved training matrix in a reloaded run."""
        if getattr(self, "_umap", None) is None:
            self._umap = self._fit_umap()
        return self._umap

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_umap", None)
        return state

    def _filled(self, values: np.ndarray, group: list[str]) -> np.ndarray:
        missing = np.isnan(values)
        if not missing.any():
            return values
        if not self.params.impute:
            col = group[int(np.flatnonzero(missing.any(axis=0))[0])]
            raise FeatureInputError(f"{self.name}: column {col!r} has missing values; impute them first "
                             f"(e.g. an impute cleaner) or set impute: true")
        return np.where(missing, self.medians_, values)

    def _report(self) -> dict[str, Any]:
        p = self.params
        return {"group": list(self.group_), "n_components": p.n_components, "n_neighbors": self._model().n_neighbors,
                "metric": p.metric}


def resolve_group(stage: str, group: list[str] | str | None, schema: Schema) -> list[str]:
    """The columns a group names: a list of columns, a modality's columns, or a prefix's columns."""
    names = [c.name for c in schema.columns]
    if group is None:
        return names
    if isinstance(group, list):
        if not group:
            raise FeatureInputError(f"{stage}: the group is an empty list; name at least one column")
        unknown = [c for c in group if c not in names]
        if unknown:
            raise FeatureInputError(f"{stage}: group columns {unknown} are not features (features: {names[:12]})")
        return list(group)
    if group in set(Modality):
        columns = [c.name for c in schema.columns if c.modality == group]
    else:
        columns = [n for n in names if n.startswith(group)]
    if not columns:
        raise FeatureInputError(f"{stage}: unknown feature group {group!r}: no feature has that modality or name "
                         f"prefix (modalities: {sorted(set(str(c.modality) for c in schema.columns))}, "
                         f"features: {names[:12]})")
    return columns


def _medians(values: np.ndarray, group: list[str], stage: str) -> np.ndarray:
    observed = ~np.isnan(values)
    empty = [c for c, seen in zip(group, observed.any(axis=0)) if not seen]
    if empty:
        raise FeatureInputError(f"{stage}: columns {empty} have no values in the training data; drop them from the group")
    return np.nanmedian(values, axis=0) if len(values) else np.zeros(len(group))
