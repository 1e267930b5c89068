"""``woe-binning``: weight of evidence per bin and information value per feature, with PSI refresh.

Numeric features are cut at training quantiles, categorical ones binned by level; missing
values get a bin of their own. Each bin's WoE is ``ln(share of non-events / share of events)``
(additive smoothing keeps empty bins finite) and a feature's information value is
``sum((share non-events - share events) * WoE)``; features under ``min_iv`` are dropped.
Text columns pass through unchanged.

The fitted bins double as the drift reference: :meth:`WoEBinning.psi` gives the population
stability index of each feature between the training data and a new batch, and
:meth:`WoEBinning.refresh` refits only the features whose PSI passes the threshold and records
the new version in ``history_``.

Hand-written on pandas/numpy: category_encoders' WOEEncoder bins no numeric features and
reports no IV, and optbinning pulls an optimisation solver (ortools) for what quantile cuts do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from forgeline.core import (ColumnSpec, FeatureTransform, InputError, Modality, Params, Problem, Role,
                            Schema)

MISSING = "missing"
OTHER = "other"  # a level unseen at fit time: WoE 0 (no evidence either way)


class WoEBinning(FeatureTransform):
    """Weight-of-evidence binning with information value; PSI drift check and refit of drifted features."""

    name = "woe-binning"
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL, Modality.TEXT})

    class Params(Params):
        bins: int = Field(8, ge=2, description="quantile bins per numeric feature (fewer when values repeat)")
        min_iv: float = Field(0.02, ge=0, description="drop features whose information value is below this")
        smoothing: float = Field(0.5, gt=0, description="additive count per bin, so empty bins have a finite WoE")
        drift_threshold: float = Field(0.2, gt=0, description="PSI above which refresh() refits a feature "
                                       "(0.1-0.25: moderate shift, above 0.25: major)")

    # ----------------------------------------------------------------- sklearn protocol

    def fit(self, X: Any, y: Any = None, schema: Schema | None = None) -> WoEBinning:
        schema = schema or Schema.infer(X)
        events = _events(y, len(X))
        binned = schema.features([Modality.NUMERIC, Modality.CATEGORICAL])
        self.numeric_ = [c for c in binned if schema[c].modality == Modality.NUMERIC]
        self.passthrough_ = {c: str(schema[c].modality) for c in X.columns if c not in binned}
        self.edges_, self.woe_, self.iv_, self.reference_ = {}, {}, {}, {}
        for c in binned:
            self._fit_column(X[c], events, c)
        self.kept_ = [c for c in binned if self.iv_[c] >= self.params.min_iv]
        self.version_, self.history_ = 1, []
        return self

    def transform(self, X: Any) -> Any:
        import pandas as pd

        out = pd.DataFrame({f"{c}_woe": self._labels(X[c], c).map(self.woe_[c]).fillna(0.0).astype(float)
                            for c in self.kept_}, index=X.index)
        for c in self.passthrough_:
            out[c] = X[c]
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"{c}_woe" for c in self.kept_] + list(self.passthrough_), dtype=object)

    def output_schema(self) -> Schema:
        return Schema(tuple([ColumnSpec(f"{c}_woe", Role.FEATURE, Modality.NUMERIC) for c in self.kept_]
                            + [ColumnSpec(c, Role.FEATURE, Modality(m)) for c, m in self.passthrough_.items()]))

    def report(self) -> dict[str, Any]:
        return {"information_value": {c: round(v, 4) for c, v in sorted(self.iv_.items(), key=lambda kv: -kv[1])},
                "kept": list(self.kept_), "dropped": [c for c in self.iv_ if c not in self.kept_],
                "version": self.version_, "history": self.history_}

    # ----------------------------------------------------------------- drift

    def psi(self, X: Any) -> dict[str, float]:
        """Population stability index of every binned feature: reference (fit data) vs ``X``."""
        out = {}
        for c, ref in self.reference_.items():
            new = self._labels(X[c], c).value_counts(normalize=True)
            e = np.asarray([ref.get(b, 0.0) for b in ref], dtype=float)
            a = np.asarray([new.get(b, 0.0) for b in ref], dtype=float)
            e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)  # empty bins: PSI stays finite
            out[c] = float(np.sum((a - e) * np.log(a / e)))
        return out

    def refresh(self, X: Any, y: Any, threshold: float | None = None) -> dict[str, Any]:
        """Refit the bins and WoE of the features whose PSI on ``X`` passes ``threshold``
        (default ``drift_threshold``); bumps ``version_`` when one did. Returns the record."""
        threshold = self.params.drift_threshold if threshold is None else threshold
        psi = self.psi(X)
        drifted = sorted(c for c, v in psi.items() if v > threshold)
        if drifted:
            events = _events(y, len(X))
            for c in drifted:
                self._fit_column(X[c], events, c)
            self.kept_ = [c for c in self.iv_ if self.iv_[c] >= self.params.min_iv]
            self.version_ += 1
        record = {"version": self.version_, "threshold": threshold, "refit": drifted,
                  "psi": {c: round(v, 4) for c, v in psi.items()}}
        self.history_.append(record)
        return record

    # ----------------------------------------------------------------- internals

    def _fit_column(self, x: Any, events: np.ndarray, c: str) -> None:
        if c in self.numeric_:
            values = x.to_numpy(float)
            qs = np.nanquantile(values, np.linspace(0, 1, self.params.bins + 1)[1:-1]) if np.isfinite(values).any() else []
            self.edges_[c] = [float(e) for e in np.unique(qs)]
        labels = self._labels(x, c)
        s = self.params.smoothing
        counts = labels.groupby(events).value_counts().unstack(0, fill_value=0).reindex(columns=[False, True], fill_value=0)
        levels = list(counts.index) + ([OTHER] if c not in self.numeric_ else [])
        counts = counts.reindex(levels, fill_value=0)
        good = (counts[False] + s) / (counts[False].sum() + s * len(counts))
        bad = (counts[True] + s) / (counts[True].sum() + s * len(counts))
        woe = np.log(good / bad)
        if c not in self.numeric_:
            woe[OTHER] = 0.0
        self.woe_[c] = {str(k): float(v) for k, v in woe.items()}
        self.iv_[c] = float(((good - bad) * woe).sum())
        self.reference_[c] = {str(k): float(v) for k, v in labels.value_counts(normalize=True).items()}

    def _labels(self, x: Any, c: str) -> Any:
        """Each value's bin label: ``b0..bK`` for numeric cuts, the level for categories."""
        import pandas as pd

        if c in self.numeric_:
            values = x.to_numpy(float)
            codes = np.searchsorted(np.asarray(self.edges_.get(c, []), dtype=float), values, side="right")
            labels = np.where(np.isnan(values), MISSING, np.char.add("b", codes.astype(str)))
            return pd.Series(labels, index=x.index)
        labels = x.astype(object).where(x.notna(), MISSING).astype(str)
        if c in self.woe_:
            labels = labels.where(labels.isin(list(self.woe_[c])), OTHER)
        return labels


def _events(y: Any, n: int) -> np.ndarray:
    """The target as booleans (True: the event, e.g. default = the larger of two labels)."""
    if y is None:
        raise InputError([Problem("features", "woe-binning needs the target (binary labels) to fit")])
    values = np.asarray(y)
    levels = np.unique(values[~_isnan(values)])
    if len(levels) != 2 or len(values) != n:
        raise InputError([Problem("features", f"woe-binning needs a binary target; got {len(levels)} "
                                  f"distinct values {list(levels[:5])}")])
    return values == levels[1]


def _isnan(values: np.ndarray) -> np.ndarray:
    return np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), bool)
