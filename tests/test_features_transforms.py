"""The built-in feature transforms in Python: what each computes, scikit-learn's own checks,
and no leakage from the validation/test rows into fitting (through a real run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from forgeline.core import api
from forgeline.core import InputError, Modality, Schema, StageContext
from forgeline.plugins.features import Cross, L1Rfe, ShapSelect, Umap, forgeline_feature_transforms


@pytest.fixture(autouse=True)
def one_thread():
    # OpenMP's spin-waits make HistGradientBoosting 50x slower on an oversubscribed 2-core machine
    with threadpool_limits(1):
        yield


def informative(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """y depends on a and b; noise columns do not; city is categorical."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "noise1": rng.normal(size=n),
                      "noise2": rng.normal(size=n), "noise3": rng.normal(size=n),
                      "city": pd.Categorical(rng.choice(["n", "s", "e"], n))})
    y = (2 * X["a"] - 1.5 * X["b"] + 0.3 * rng.normal(size=n) > 0).astype(int).to_numpy()
    return X, y


def test_hook_registers_the_four_transforms():
    classes = forgeline_feature_transforms()
    assert [c.name for c in classes] == ["shap-select", "umap", "cross", "l1-rfe"]
    assert all(c.summary() and all(f.description for f in c.Params.model_fields.values()) for c in classes)


# ------------------------------------------------------------------ scikit-learn's checks

DATAFRAME_OUT = "returns a DataFrame (row ids kept as the index), which has no single .dtype"
PYDANTIC_INIT = "parameters are a pydantic model validated in __init__(params, **fields), as every component's"
EXPECTED = {
    "check_transformer_preserve_dtypes": DATAFRAME_OUT,
    "check_do_not_raise_errors_in_init_or_set_params": PYDANTIC_INIT,
}


def _expected(estimator) -> dict[str, str]:
    extra = {"check_set_params": "pydantic stores validated copies, so get_params returns equal, not identical, "
                                 "values (int | float 'keep')"} if estimator.name == "shap-select" else {}
    return {**EXPECTED, **extra}


@parametrize_with_checks([Cross(), L1Rfe(cv=2), ShapSelect(background=20)], expected_failed_checks=_expected)
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


def test_each_transform_clones_and_runs_in_a_plain_sklearn_pipeline():
    X, y = informative(200)
    for transform in (Cross(max_crosses=3), L1Rfe(cv=3), ShapSelect(keep=2, background=50)):
        direct = clone(transform).fit(X, y).transform(X)
        piped = Pipeline([("t", clone(transform))]).fit(X, y).transform(X)
        pd.testing.assert_frame_equal(direct, piped)
        assert list(transform.fit(X, y).get_feature_names_out()) == list(direct.columns)
        assert direct.index.equals(X.index)


# ------------------------------------------------------------------ cross

def test_cross_products_crosses_and_schema():
    X, y = informative(300)
    X["zone"] = pd.Categorical(np.where(np.arange(300) % 2, "x", "y"))
    t = Cross(max_crosses=50, threshold=0.99).fit(X, y)
    out = t.transform(X)
    np.testing.assert_allclose(out["a_x_b"], X["a"] * X["b"])
    assert out["city_x_zone"].iloc[0] == f"{X['city'].iloc[0]}|{X['zone'].iloc[0]}"
    spec = t.output_schema()
    assert spec["city_x_zone"].modality == Modality.CATEGORICAL and spec["a_x_b"].modality == Modality.NUMERIC
    assert spec["city"].modality == Modality.CATEGORICAL
    # a category never seen in training becomes missing, not an error
    new = X.head(3).copy()
    new["city"] = pd.Categorical(["mars", "n", "s"])
    assert out.columns.equals(t.transform(new).columns) and pd.isna(t.transform(new)["city_x_zone"].iloc[0])
    report = t.report()
    assert report["features_in"] == 7 and report["features_out"] == len(out.columns)
    assert set(report["added"]) == set(out.columns) - set(X.columns)


def test_cross_cap_keeps_the_most_relevant_crosses():
    X, _ = informative(400)
    y = (X["a"] * X["b"] > 0).astype(int).to_numpy()  # an interaction: only the product a*b tells
    t = Cross(max_crosses=1, categorical=False).fit(X, y)
    assert t.report()["added"] == ["a_x_b"] and t.report()["candidates"] == 10
    assert len(Cross(max_crosses=4).fit(X, y).report()["added"]) == 4


def test_correlation_filter_keeps_the_member_more_related_to_the_target():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=500)
    y = (signal > 0).astype(int)
    # twin is signal plus a little noise: |r| ~ 0.99 and less related to y than signal
    X = pd.DataFrame({"twin": signal + 0.1 * rng.normal(size=500), "signal": signal, "other": rng.normal(size=500)})
    t = Cross(max_crosses=0, threshold=0.9).fit(X, y)
    assert list(t.transform(X).columns) == ["signal", "other"]
    (entry,) = t.report()["correlation_filter"]
    assert entry["dropped"] == "twin" and entry["kept"] == "signal" and entry["abs_corr"] > 0.9
    # mutual information agrees
    assert "twin" in Cross(max_crosses=0, threshold=0.9, relevance="mutual-info").fit(X, y).report()["dropped"]


def test_cross_is_vectorised_enough_for_many_pairs():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20000, 30)), columns=[f"f{i}" for i in range(30)])
    y = (X["f0"] * X["f1"] > 0).astype(int).to_numpy()
    t = Cross(max_crosses=5).fit(X, y)  # 435 candidate products scored
    assert t.report()["candidates"] == 435 and t.report()["added"][0] == "f0_x_f1"


# ------------------------------------------------------------------ shap-select

@pytest.mark.parametrize("params, expected", [
    ({"keep": 2}, ["a", "b"]),
    ({"keep": 0.3}, ["a", "b"]),  # ceil(0.3 x 6)
    ({"cumulative": 0.5}, None),
    ({"keep": 2, "model": "random-forest"}, ["a", "b"]),
    ({"keep": 2, "model": "linear"}, ["a", "b"]),
    ({"keep": 2, "model": "linear", "explainer": "permutation", "background": 30}, ["a", "b"]),
])
def test_shap_select_keeps_the_informative_features(params, expected):
    X, y = informative(400)
    t = ShapSelect(**params).fit(X, y)
    kept = list(t.transform(X).columns)
    if expected is not None:
        assert sorted(kept) == expected
    else:  # the cut: the fewest top features reaching half the total importance
        shares = np.cumsum(t.importance_) / t.importance_.sum()
        assert len(kept) == int(np.argmax(shares >= 0.5)) + 1 and t.ranking_[0] in {"a", "b"}
    assert t.ranking_[:2] == sorted(t.ranking_[:2], key=lambda c: -t.importance_[t.ranking_.index(c)])


def test_shap_select_writes_ranking_and_plot_into_the_artifacts_folder(tmp_path):
    X, y = informative(300)
    t = ShapSelect(keep=3, background=100)
    t.bind(StageContext(seed=0, artifacts=tmp_path))
    t.fit(X, y)
    ranking = pd.read_csv(tmp_path / "shap-ranking.csv")
    assert list(ranking["feature"]) == t.ranking_ and ranking["kept"].sum() == 3
    assert (tmp_path / "shap-ranking.json").stat().st_size > 0
    assert (tmp_path / "shap-summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # outside a run nothing is written
    ShapSelect(keep=3, background=100).fit(X, y)
    assert len(list(tmp_path.iterdir())) == 3


def test_text_columns_pass_through_the_selectors():
    X, y = informative(200)
    X["note"] = [f"free text number {i} with many words" for i in range(200)]
    for t in (ShapSelect(keep=1, background=50), L1Rfe(cv=3)):
        out = t.fit(X, y).transform(X)
        assert "note" in out.columns and "note" in t.report()["passed_through"]


@pytest.mark.parametrize("transform, message", [
    (ShapSelect(keep=9), "shap-select: keep=9 is larger than the 6 scorable feature(s) there are; use at most 6"),
    (L1Rfe(min_features=8), "l1-rfe: min_features=8 is larger than the 5 numeric feature(s) there are"),
    (Umap(n_components=3, group=["a", "b"]), "umap: n_components=3 is larger than the 2 feature(s) in the group"),
    (Umap(group="nope"), "umap: unknown feature group 'nope'"),
    (Umap(group=["a", "zz"]), "umap: group columns ['zz'] are not features"),
    (Umap(group="categorical"), "umap: column 'city' has dtype category; only numeric columns can be used"),
])
def test_bad_requests_are_one_line_input_errors(transform, message):
    X, y = informative(100)
    with pytest.raises(InputError) as e:
        transform.fit(X, y)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ------------------------------------------------------------------ l1-rfe

def test_l1_rfe_keeps_the_signals_and_drops_noise():
    X, y = informative(600)
    t = L1Rfe(cv=3, C=0.05).fit(X, y)
    out = t.transform(X)
    assert {"a", "b", "city"} <= set(out.columns) and len(out.columns) < len(X.columns)
    r = t.report()
    assert r["n_selected"] == len(out.columns) - 1 and set(r["cv_score_by_n_features"]) == {1, 2, 3, 4, 5}
    # regression: Lasso
    rng = np.random.default_rng(3)
    Xr = pd.DataFrame(rng.normal(size=(300, 6)), columns=list("uvwxyz"))
    yr = 3 * Xr["u"] - 2 * Xr["w"] + 0.1 * rng.normal(size=300)
    kept = L1Rfe(cv=3, alpha=0.05).fit(Xr, yr).get_feature_names_out()
    assert {"u", "w"} <= set(kept) and t.report()["task"] == "classification"


# ------------------------------------------------------------------ no leakage, through a run

def test_fitting_sees_only_training_rows(tmp_path):
    """Change every feature value of the validation and test rows: the fitted state of every
    transform must stay exactly the same, and so must the transformed training rows."""
    from forgeline.plugins.datasets.credit import Credit

    frame = Credit(rows=500).load(StageContext(seed=0)).frame.drop(columns=["comment"])
    pipeline = {"name": "leak", "seed": 3, "data": {"source": "file", "with": {"path": str(tmp_path / "d.csv")},
                                                   "target": "default",
                                                   "split": {"test": 0.2, "validation": 0.2, "stratify": True}},
                "features": [{"use": "cross", "with": {"max_crosses": 5}},
                             {"use": "l1-rfe", "with": {"cv": 3, "step": 2}},
                             {"use": "shap-select", "with": {"keep": 4, "background": 60}}]}
    frame.to_csv(tmp_path / "d.csv", index=False)
    first = api.run(pipeline, out=tmp_path / "runs")
    held_out = np.concatenate([first.splits.valid.row_ids, first.splits.test.row_ids])
    changed = frame.copy()
    numeric = ["age", "income", "balance", "debt_ratio", "credit_limit"]
    changed.loc[held_out, numeric] = changed.loc[held_out, numeric] * 3 + 7
    changed.loc[held_out, "purpose"] = "vacation"
    changed.to_csv(tmp_path / "d.csv", index=False)
    second = api.run(pipeline, out=tmp_path / "runs")
    assert np.array_equal(second.splits.test.row_ids, first.splits.test.row_ids)
    for (_, a), (_, b) in zip(first.stages, second.stages, strict=True):
        assert a.report() == b.report(), a.name
        for attr in ("relevance_", "importance_", "ranking_"):
            if hasattr(a, attr):
                assert np.array_equal(np.asarray(getattr(a, attr), dtype=object), np.asarray(getattr(b, attr), dtype=object))
    pd.testing.assert_frame_equal(first.splits.train.frame, second.splits.train.frame)
    assert not first.splits.test.frame.equals(second.splits.test.frame)  # the change did reach the data
    # the transforms' own output specs reached the table's schema
    assert second.splits.train.schema.features() == list(second.stages[-1][1].get_feature_names_out())
    assert any(s.modality == Modality.CATEGORICAL and "_x_" in s.name for s in first.stages[0][1].output_schema().columns)
