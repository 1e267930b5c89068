"""The features stage: fit a transform on the training split, transform every split.

Each output column gets the spec the transform declares (``output_schema``), so a
transform can make categorical columns. The stage also records a *probe* score before and
after the transform: a quick linear model (logistic regression, or ridge for regression) on
the numeric features, fitted on the training split and scored on the validation split (AUC,
or R²), so the run report shows what each transform bought.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..components import FeatureTransform, Kind
from ..data import ColumnSpec, Modality, Role, Schema, Table
from .base import RunState, Stage, StageEnv

#: training rows the probe fits on at most (a sample beyond): it is a gauge, not a model
PROBE_ROWS = 20_000


class FeaturesStage(Stage):
    """Runs one feature transform; records its report, its probe scores and its fitted state."""

    kind = Kind.FEATURE_TRANSFORM
    needs = ("splits", "task")
    gives = ("splits", "fitted", "probe")

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        transform: FeatureTransform = self.build()
        splits, seed = state.splits, env.plan.pipeline.seed
        before = state.probe if state.probe is not None else probe(splits.train, splits.validation, state.task, seed)
        schema = Schema(tuple(c for c in splits.train.schema.columns if c.name in splits.train.X.columns))
        transform.fit_with_schema(splits.train.X, splits.train.y, schema)
        state.splits = splits.map(lambda name, t: transformed(t, transform))
        state.probe = probe(state.splits.train, state.splits.validation, state.task, seed)
        report = {**transform.report(), "features_in": len(splits.train.X.columns),
                  "features_out": len(state.splits.train.X.columns)}
        report["probe"] = {"metric": "auc" if state.task == "classification" else "r2",
                           "before": before, "after": state.probe}
        report["state"] = env.folder.save_stage(f"{self.id}-{transform.name}", transform, self.provider)
        state.fitted.append((self.id, transform))
        return report

    restore = Stage.load_fitted


def transformed(table: Table, transform: FeatureTransform) -> Table:
    """The table with its frame feature columns replaced by the transform's output."""
    out = transform.transform(table.X)
    keep = [c for c in table.frame.columns if c not in table.X.columns]
    declared = {c.name: c for c in transform.output_schema().columns}
    old = {c.name: c for c in table.schema.columns}
    specs = [old[c] for c in keep] + [declared.get(str(c)) or ColumnSpec(str(c), Role.FEATURE, Modality.NUMERIC)
                                      for c in out.columns]
    arrays_specs = [c for c in table.schema.columns if c.name in table.arrays]
    return table.with_frame(table.frame[keep].join(out), Schema(tuple(specs + arrays_specs)))


def probe(train: Table, valid: Table | None, task: str | None, seed: int) -> float | None:
    """Validation AUC (classification) or R² (regression) of a linear model on the numeric features.

    None when it cannot be measured: no target, no numeric feature, a single class.
    """
    if valid is None or train.y is None or task not in ("classification", "regression"):
        return None
    columns = [c for c in train.schema.features(Modality.NUMERIC) if c in train.frame.columns]
    if not columns or len(train) < 2 or len(valid) < 2:
        return None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(train), PROBE_ROWS, replace=False)) if len(train) > PROBE_ROWS else slice(None)
    X, y = train.frame[columns].to_numpy(np.float64)[rows], train.y.to_numpy()[rows]
    Xv, yv = valid.frame.reindex(columns=columns).to_numpy(np.float64), valid.y.to_numpy()
    try:
        return round(float(_score(X, y, Xv, yv, task)), 4)
    except ValueError:  # e.g. one class in a split: no AUC to give
        return None


def _score(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, task: str) -> float:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Xv = np.where(np.isinf(X), np.nan, X), np.where(np.isinf(Xv), np.nan, Xv)
    head = [SimpleImputer(keep_empty_features=True), StandardScaler()]
    if task == "regression":
        return r2_score(yv, make_pipeline(*head, Ridge()).fit(X, y).predict(Xv))
    model = make_pipeline(*head, LogisticRegression(max_iter=300)).fit(X, y)
    known = np.isin(yv, model.classes_)
    proba = model.predict_proba(Xv[known])
    if len(model.classes_) == 2:
        return roc_auc_score(yv[known], proba[:, 1])
    return roc_auc_score(yv[known], proba, multi_class="ovr", labels=model.classes_)
