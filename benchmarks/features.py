"""Feature-transform benchmark: each built-in transform against the library called directly.

Runs, on the same data in one process, and prints forgeline vs peer and their ratio
(peer seconds / forgeline seconds; 0.95 or more = forgeline within 5%):

1. shap-select: HistGradientBoosting + shap ``TreeExplainer`` on a 1,000-row sample, top k;
2. umap: umap-learn ``UMAP`` fitted on the training rows, then ``transform`` of held-out rows
   (numba kernels compiled once beforehand, for both sides);
3. cross: scikit-learn ``PolynomialFeatures(interaction_only)`` + ``r_regression`` top-k +
   numpy correlation filter, against forgeline's blockwise scoring;
4. l1-rfe: scikit-learn ``RFECV`` around the same imputer/scaler/L1 logistic pipeline;
5. feature count and validation AUC before/after each transform on the credit-risk data
   (HistGradientBoosting on the features before and after, the same split).

Full sizes (100,000 x 50) are the defaults; ``--rows/--features`` or ``--quick`` for a busy machine.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from forgeline.core import Schema, StageContext
from forgeline.plugins.features import Cross, L1Rfe, ShapSelect, Umap
from forgeline.plugins.features.l1_rfe import l1_pipeline

warnings.filterwarnings("ignore")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def line(what: str, ours: float, peer: float) -> None:
    print(f"  {what:<58} forgeline {ours:8.2f} s   peer {peer:8.2f} s   ratio {peer / ours:5.2f}x "
          f"(peer/forgeline; >= 0.95 = within 5%)")


def data(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(rows, features, n_informative=max(4, features // 5), n_redundant=features // 10,
                               random_state=seed)
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(features)]), y


def bench_shap(X: pd.DataFrame, y: np.ndarray, k: int) -> None:
    import shap
    from sklearn.ensemble import HistGradientBoostingClassifier

    def peer():
        model = HistGradientBoostingClassifier(random_state=0).fit(X.to_numpy(), y)
        rows = np.sort(np.random.default_rng(0).choice(len(X), 1000, replace=False))
        values = shap.TreeExplainer(model).shap_values(X.to_numpy()[rows], check_additivity=False)
        return X.columns[np.argsort(-np.abs(values).mean(axis=0))[:k]]

    ours = lambda: ShapSelect(keep=k, background=1000, random_state=0).fit(X, y).transform(X)  # noqa: E731
    _, t_peer = timed(peer)
    _, t_ours = timed(ours)
    line(f"shap-select top {k} (HGB + TreeExplainer, 1,000-row sample)", t_ours, t_peer)


def bench_umap(X: pd.DataFrame, held_out: pd.DataFrame) -> None:
    import umap

    # compile the numba kernels once, on both paths: the exact neighbours of a small table and
    # the NN-descent (pynndescent) that umap-learn switches to above 4,096 rows
    for rows in (300, 5_000):
        small = np.random.default_rng(0).normal(size=(rows, 5))
        umap.UMAP(random_state=0, n_jobs=1).fit(small).transform(small[:10])

    def peer():
        return umap.UMAP(n_components=2, n_neighbors=15, random_state=0, n_jobs=1).fit(X.to_numpy()).transform(
            held_out.to_numpy())

    ours = lambda: Umap(n_components=2, n_neighbors=15, random_state=0).fit(X).transform(held_out)  # noqa: E731
    _, t_peer = timed(peer)
    _, t_ours = timed(ours)
    line(f"umap fit {len(X):,} rows + transform {len(held_out):,}", t_ours, t_peer)


def bench_cross(X: pd.DataFrame, y: np.ndarray, cap: int, threshold: float) -> None:
    from sklearn.feature_selection import r_regression
    from sklearn.preprocessing import PolynomialFeatures

    def peer():
        poly = PolynomialFeatures(2, interaction_only=True, include_bias=False).fit(X)
        P = poly.transform(X)[:, X.shape[1]:]  # the pair products only
        top = np.argsort(-np.abs(r_regression(P, y)))[:cap]
        full = np.concatenate([X.to_numpy(), P[:, top]], axis=1)
        rel = np.abs(r_regression(full, y))
        corr = np.abs(np.corrcoef(full, rowvar=False))
        dropped = set()
        iu = np.triu_indices(len(corr), 1)
        for k in np.argsort(-corr[iu]):
            i, j = iu[0][k], iu[1][k]
            if corr[i, j] <= threshold:
                break
            if i not in dropped and j not in dropped:
                dropped.add(i if rel[i] < rel[j] else j)
        return np.delete(full, sorted(dropped), axis=1)

    ours = lambda: Cross(max_crosses=cap, threshold=threshold).fit(X, y).transform(X)  # noqa: E731
    out_peer, t_peer = timed(peer)
    out_ours, t_ours = timed(ours)
    line(f"cross: {X.shape[1] * (X.shape[1] - 1) // 2} products scored, top {cap}, filter |r|>{threshold}",
         t_ours, t_peer)
    print(f"    outputs: forgeline {out_ours.shape[1]} columns, peer {out_peer.shape[1]} columns")


def bench_l1(X: pd.DataFrame, y: np.ndarray, step: int) -> None:
    from sklearn.feature_selection import RFECV
    from sklearn.model_selection import StratifiedKFold

    params = L1Rfe(cv=3, step=step, random_state=0)

    def peer():
        return RFECV(l1_pipeline(params.params, "classification"), step=step, cv=StratifiedKFold(3, shuffle=True,
                     random_state=0), scoring="roc_auc", importance_getter="named_steps.model.coef_").fit(X, y)

    ours = lambda: params.fit(X, y).transform(X)  # noqa: E731
    _, t_peer = timed(peer)
    _, t_ours = timed(ours)
    line(f"l1-rfe (RFECV, L1 logistic, 3 folds, step {step})", t_ours, t_peer)


def credit_auc(rows: int) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from forgeline.plugins.datasets.credit import Credit

    table = Credit(rows=rows).load(StageContext(seed=0))
    X = table.X.drop(columns=["comment"])
    y = table.y.to_numpy()
    schema = Schema(tuple(table.schema[c] for c in X.columns))
    tr, va = train_test_split(np.arange(len(X)), test_size=0.25, random_state=0, stratify=y)

    def auc(train: pd.DataFrame, valid: pd.DataFrame) -> float:
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
        return roc_auc_score(y[va], model.fit(train, y[tr]).predict_proba(valid)[:, 1])

    base = auc(X.iloc[tr], X.iloc[va])
    print(f"credit-risk ({rows:,} rows, {len(tr):,} train / {len(va):,} validation; HistGradientBoosting AUC)")
    print(f"  {'no transform':<44} {X.shape[1]:3d} features  val AUC {base:.4f}")
    for t in (ShapSelect(keep=5), Umap(group="numeric", n_components=3), Cross(max_crosses=10, threshold=0.9),
              L1Rfe(cv=3)):
        fitted = t.fit(X.iloc[tr], y[tr], schema)
        train, valid = fitted.transform(X.iloc[tr]), fitted.transform(X.iloc[va])
        for c, spec in zip(fitted.get_feature_names_out(), fitted.output_schema().columns):
            if str(spec.modality) == "categorical":
                train[c], valid[c] = train[c].astype("category"), valid[c].astype(train[c].dtype)
        print(f"  {repr(t)[:44]:<44} {X.shape[1]:3d} -> {train.shape[1]:3d} features  "
              f"val AUC {base:.4f} -> {auc(train, valid):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--credit-rows", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="10,000 x 20 and 5,000 credit rows")
    ap.add_argument("--only", choices=["shap", "umap", "cross", "l1", "credit"], action="append")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.features, a.credit_rows = 10_000, 20, 5_000
    only = set(a.only or ["shap", "umap", "cross", "l1", "credit"])
    X, y = data(a.rows, a.features)
    print(f"{a.rows:,} rows x {a.features} features (make_classification)")
    if "shap" in only:
        bench_shap(X, y, k=a.features // 5)
    if "umap" in only:
        held_out, _ = data(max(1000, a.rows // 10), a.features, seed=1)
        bench_umap(X, held_out)
    if "cross" in only:
        bench_cross(X, y, cap=20, threshold=0.95)
    if "l1" in only:
        bench_l1(X, y, step=max(1, a.features // 10))
    if "credit" in only:
        credit_auc(a.credit_rows)


if __name__ == "__main__":
    main()
