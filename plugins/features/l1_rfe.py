"""``l1-rfe``: scikit-learn's ``RFECV`` around an L1-regularised linear model.

Classification uses ``LogisticRegression(penalty="l1")`` (liblinear or saga), regression
``Lasso``; both see median-imputed, standardised columns (an L1 penalty is only fair between
columns on one scale), so the estimator RFECV refits is that small sklearn pipeline and the
importance it ranks by is the model's ``coef_``. The number of features kept is the one with
the best cross-validated score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import Modality, Params, Schema, StageContext

from ._base import FeatureInputError, SelectingStep, check_count, numeric_matrix, task_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class L1RfeParams(Params):
    C: float = Field(0.1, gt=0, description="inverse L1 strength of the logistic regression (classification)")
    alpha: float = Field(0.01, gt=0, description="L1 strength of the Lasso (regression)")
    solver: Literal["auto", "liblinear", "saga"] = Field(
        "auto", description="logistic-regression solver with an L1 penalty (auto: liblinear for two classes, "
        "saga for more, which liblinear cannot fit)")
    step: int | float = Field(1, gt=0, description="features removed per round: an int, or a share (< 1) "
                              "of the remaining ones")
    cv: int = Field(5, ge=2, description="cross-validation folds for choosing how many features to keep")
    min_features: int = Field(1, ge=1, description="never keep fewer features than this")
    scoring: str | None = Field(None, description="scikit-learn scorer for the CV (None: roc_auc for two "
                                "classes, accuracy for more, r2 for regression)")
    max_iter: int = Field(1000, ge=1, description="iterations of the linear model's solver")
    random_state: int | None = Field(None, description="seed of the fold shuffle (None: the run's seed)")


class L1Rfe(SelectingStep):
    """Recursive feature elimination with an L1 model; cross-validation picks how many to keep.

    Numeric features are scored; other columns pass through unchanged.
    """

    name = "l1-rfe"
    Params = L1RfeParams
    modalities = frozenset({Modality.NUMERIC})

    def _fit(self, X: pd.DataFrame, y: np.ndarray, schema: Schema, ctx: StageContext) -> None:
        from sklearn.feature_selection import RFECV

        p = self.params
        scored, passed = self._split_scorable(schema, [Modality.NUMERIC])
        check_count(self.name, "min_features", p.min_features, len(scored), "numeric feature(s)")
        self.task_ = task_of(y)
        self.rfecv_ = RFECV(l1_pipeline(p, self.task_, len(np.unique(y))), step=p.step, min_features_to_select=p.min_features,
                            cv=_folds(p, self.task_, self._seed(ctx)), scoring=p.scoring or _scoring(y, self.task_),
                            importance_getter="named_steps.model.coef_")
        self.rfecv_.fit(numeric_matrix(X, scored, self.name), y)
        self.scored_ = scored
        self._keep(X, schema, [c for c, keep in zip(scored, self.rfecv_.support_) if keep], passed)

    def _report(self) -> dict[str, Any]:
        res = self.rfecv_.cv_results_
        return {"task": self.task_, "n_selected": int(self.rfecv_.n_features_),
                "passed_through": list(self.passed_through_),
                "rank": {c: int(r) for c, r in zip(self.scored_, self.rfecv_.ranking_)},
                "cv_score_by_n_features": {int(n): round(float(s), 5)
                                           for n, s in zip(res["n_features"], res["mean_test_score"])}}


def l1_pipeline(p: L1RfeParams, task: str, n_classes: int = 2) -> Any:
    """median fill -> standardise -> L1 model (the estimator RFECV refits each round)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Lasso, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "classification":
        solver = p.solver if p.solver != "auto" else ("liblinear" if n_classes == 2 else "saga")
        l1 = {"l1_ratio": 1.0} if _has_l1_ratio_api() else {"penalty": "l1"}
        model = LogisticRegression(**l1, C=p.C, solver=solver, max_iter=p.max_iter)
    else:
        model = Lasso(alpha=p.alpha, max_iter=p.max_iter)
    return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                     ("scale", StandardScaler()), ("model", model)])


def _has_l1_ratio_api() -> bool:
    """scikit-learn >= 1.8 selects the L1 penalty with ``l1_ratio=1`` (``penalty`` is deprecated)."""
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    return (major, minor) >= (1, 8)


def _folds(p: L1RfeParams, task: str, seed: int) -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    cls = StratifiedKFold if task == "classification" else KFold
    return cls(n_splits=p.cv, shuffle=True, random_state=seed)


def _scoring(y: np.ndarray, task: str) -> str:
    if task == "regression":
        return "r2"
    return "roc_auc" if len(np.unique(y)) == 2 else "accuracy"
