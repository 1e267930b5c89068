"""``shap-select``: keep the features with the largest mean |SHAP value| under a fitted model.

The model is fitted on the training rows; shap's ``TreeExplainer`` (tree models) or
``LinearExplainer`` (the linear model) — or the model-agnostic ``PermutationExplainer`` —
explains a bounded random sample of them. The ranking (CSV and JSON) and shap's summary
plot (PNG) go into the stage's artifacts folder when the transform runs inside a run.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from forgeline.core import Modality, Params, Schema, StageContext

from ._base import FeatureInputError, SelectingStep, check_count, task_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

TREE_MODELS = ("hist-gradient-boosting", "random-forest")


class ShapSelectParams(Params):
    keep: int | float = Field(0.5, description="features kept: an int >= 1 keeps the top k, a float in (0, 1] "
                              "keeps that share of the scored features (rounded up)")
    cumulative: float | None = Field(None, gt=0, le=1, description="if set, instead keep the fewest top "
                                     "features whose importance adds up to this share of the total")
    model: Literal["hist-gradient-boosting", "random-forest", "linear"] = Field(
        "hist-gradient-boosting", description="model whose predictions are explained (linear: logistic "
        "regression or ridge on median-imputed, standardised features)")
    explainer: Literal["auto", "tree", "linear", "permutation"] = Field(
        "auto", description="shap explainer; auto = tree for tree models, linear for the linear model")
    background: int = Field(500, ge=10, description="rows sampled from the training data that the "
                            "explainer explains and uses as reference (bounds the cost)")
    random_state: int | None = Field(None, description="seed of the model and the sample (None: the run's seed)")

    @field_validator("keep")
    @classmethod
    def _keep_range(cls, v: int | float) -> int | float:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1) or (isinstance(v, float) and not 0 < v <= 1):
            raise ValueError("keep must be an int >= 1 (top k) or a float in (0, 1] (a share)")
        return v


class ShapSelect(SelectingStep):
    """Keep the features with the largest SHAP importance (top k, a share, or a cumulative cut).

    Numeric and categorical features are scored (categories enter the model as ordinal codes;
    trees split them fine); other columns (text, datetime) pass through unchanged.
    """

    name = "shap-select"
    Params = ShapSelectParams

    def _fit(self, X: pd.DataFrame, y: np.ndarray, schema: Schema, ctx: StageContext) -> None:
        p = self.params
        scored, passed = self._split_scorable(schema)
        if isinstance(p.keep, int) and p.cumulative is None:
            check_count(self.name, "keep", p.keep, len(scored), "scorable feature(s)")
        explainer = p.explainer if p.explainer != "auto" else ("linear" if p.model == "linear" else "tree")
        if explainer == "tree" and p.model not in TREE_MODELS:
            raise FeatureInputError(f"{self.name}: explainer 'tree' needs a tree model ({', '.join(TREE_MODELS)}), "
                             f"got model {p.model!r}")
        if explainer == "linear" and p.model != "linear":
            raise FeatureInputError(f"{self.name}: explainer 'linear' needs model 'linear', got {p.model!r}")
        seed = self._seed(ctx)
        self.task_ = task_of(y)
        self.categories_ = {c: _levels(X[c]) for c in scored if schema[c].modality == Modality.CATEGORICAL}
        data = self._encode(X, scored)
        self.model_ = _model(p.model, self.task_, seed).fit(data, y)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(data), size=min(p.background, len(data)), replace=False))
        values = _shap_values(explainer, self.model_, data[rows], self.task_)
        importance = np.abs(values).mean(axis=0)
        if importance.ndim == 2:  # one column per class: average over classes
            importance = importance.mean(axis=1)
        order = np.argsort(-importance, kind="stable")
        self.ranking_ = [scored[i] for i in order]
        self.importance_ = importance[order]
        self.explainer_ = explainer
        n_keep = self._n_keep(self.importance_)
        self._keep(X, schema, self.ranking_[:n_keep], passed)
        self.needed_columns_ = [c for c in self.features_out_]
        if ctx.artifacts is not None:
            self._write_artifacts(ctx, values, data[rows], scored)

    def _n_keep(self, importance: np.ndarray) -> int:
        p, n = self.params, len(importance)
        if p.cumulative is not None:
            total = importance.sum()
            if total <= 0:
                return n
            # the first position where the running share reaches the cut (float slack: 1e-12)
            return int(np.searchsorted(np.cumsum(importance) / total, p.cumulative - 1e-12) + 1)
        if isinstance(p.keep, int):
            return p.keep
        return max(1, math.ceil(p.keep * n))

    def _encode(self, X: pd.DataFrame, columns: list[str]) -> np.ndarray:
        """Numeric columns as float64, categorical ones as the codes of their training levels (NaN: unseen)."""
        import pandas as pd

        out = np.empty((len(X), len(columns)), dtype=np.float64)
        for j, c in enumerate(columns):
            if c in self.categories_:
                codes = pd.Index(self.categories_[c]).get_indexer(X[c].astype(str).to_numpy(dtype=object))
                out[:, j] = np.where((codes >= 0) & X[c].notna().to_numpy(), codes, np.nan)
            else:
                out[:, j] = X[c].to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def _write_artifacts(self, ctx: StageContext, values: np.ndarray, sample: np.ndarray, scored: list[str]) -> None:
        import pandas as pd

        folder = ctx.artifacts
        ranking = self._ranking_frame()
        ranking.to_csv(folder / "shap-ranking.csv", index=False)
        (folder / "shap-ranking.json").write_text(json.dumps(ranking.to_dict(orient="records"), indent=2))
        _summary_plot(values, pd.DataFrame(sample, columns=scored), folder / "shap-summary.png")

    def _ranking_frame(self) -> pd.DataFrame:
        import pandas as pd

        total = float(self.importance_.sum()) or 1.0
        share = self.importance_ / total
        selected = set(self.selected_)
        return pd.DataFrame({"feature": self.ranking_, "importance": self.importance_, "share": share,
                             "cumulative": np.cumsum(share), "kept": [f in selected for f in self.ranking_]})

    def _report(self) -> dict[str, Any]:
        return {"model": self.params.model, "explainer": self.explainer_, "task": self.task_,
                "passed_through": list(self.passed_through_),
                "ranking": {f: round(float(v), 6) for f, v in zip(self.ranking_, self.importance_)}}


def _levels(s: pd.Series) -> list[str]:
    return sorted(s.dropna().astype(str).unique().tolist())


def _model(kind: str, task: str, seed: int) -> Any:
    from sklearn import ensemble, linear_model
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classify = task == "classification"
    if kind == "hist-gradient-boosting":
        cls = ensemble.HistGradientBoostingClassifier if classify else ensemble.HistGradientBoostingRegressor
        return cls(random_state=seed)
    if kind == "random-forest":
        cls = ensemble.RandomForestClassifier if classify else ensemble.RandomForestRegressor
        return cls(n_estimators=100, min_samples_leaf=5, random_state=seed, n_jobs=-1)
    # linear models need complete, comparable columns: impute medians and standardise first
    model = linear_model.LogisticRegression(max_iter=1000) if classify else linear_model.Ridge()
    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), model)


def _shap_values(explainer: str, model: Any, sample: np.ndarray, task: str) -> np.ndarray:
    """SHAP values of ``sample``: (rows, features) or (rows, features, classes)."""
    import shap

    if explainer == "tree":
        values = shap.TreeExplainer(model).shap_values(sample, check_additivity=False)
    elif explainer == "linear":
        prep, linear = model[:-1], model[-1]
        scaled = prep.transform(sample)
        values = shap.LinearExplainer(linear, scaled).shap_values(scaled)
    else:
        predict = model.predict_proba if task == "classification" else model.predict
        masker = shap.maskers.Independent(sample, max_samples=min(100, len(sample)))
        values = shap.PermutationExplainer(predict, masker, seed=0)(sample).values
    values = np.asarray(values[0] if isinstance(values, list) and len(values) == 1 else values)
    if isinstance(values, list):  # older shap: one array per class
        values = np.stack(values, axis=-1)
    return values


def _summary_plot(values: np.ndarray, sample: pd.DataFrame, file: Any) -> None:
    """shap's beeswarm summary (two classes: the positive one; more: a per-class bar chart)."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: a run never opens a window
    import matplotlib.pyplot as plt
    import shap

    if values.ndim == 3 and values.shape[2] == 2:
        values = values[:, :, 1]
    plt.figure()
    if values.ndim == 3:
        shap.summary_plot([values[:, :, c] for c in range(values.shape[2])], sample, plot_type="bar",
                          show=False, max_display=20)
    else:
        shap.summary_plot(values, sample, show=False, max_display=20)
    plt.tight_layout()
    plt.savefig(file, dpi=100)
    plt.close("all")
