"""``umap`` in Python: groups, fit on training rows only, transform of new rows.

UMAP's numba kernels compile on first use (tens of seconds), so every test that fits UMAP
lives in this one module and shares one small fitted embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from forgeline.core import Modality, Schema
from forgeline.plugins.features import Umap


def frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centres = rng.choice([-4.0, 4.0], size=(n, 1))
    return pd.DataFrame({"acc_a": centres[:, 0] + rng.normal(size=n), "acc_b": centres[:, 0] + rng.normal(size=n),
                         "acc_c": rng.normal(size=n), "age": rng.normal(40, 10, n),
                         "city": pd.Categorical(rng.choice(["n", "s"], n))}, index=np.arange(1000, 1000 + n))


@pytest.fixture(scope="module")
def fitted() -> tuple[Umap, pd.DataFrame]:
    train = frame()
    train.iloc[3, 0] = np.nan  # a missing value: filled with the training median
    return Umap(group="acc_", n_neighbors=10, random_state=0).fit(train), train


def test_prefix_group_is_replaced_by_the_embedding_and_the_rest_passes_through(fitted):
    umap, train = fitted
    out = umap.transform(train)
    assert list(out.columns) == ["age", "city", "umap_0", "umap_1"] and out.index.equals(train.index)
    assert np.isfinite(out[["umap_0", "umap_1"]].to_numpy()).all()
    schema = umap.output_schema()
    assert schema["umap_0"].modality == Modality.NUMERIC and schema["city"].modality == Modality.CATEGORICAL
    assert umap.report()["group"] == ["acc_a", "acc_b", "acc_c"] and umap.report()["dropped"] == umap.group_
    # the two clusters of the training rows stay apart in the embedding
    side = train["acc_a"].fillna(0) + train["acc_b"] > 0
    gap = abs(out.loc[side, "umap_0"].mean() - out.loc[~side, "umap_0"].mean())
    assert gap > 3 * out["umap_0"].std() / 2 or abs(out.loc[side, "umap_1"].mean() - out.loc[~side, "umap_1"].mean()) > 1


def test_transforming_new_rows_leaves_the_fitted_embedding_unchanged(fitted):
    umap, _ = fitted
    before = umap._model().embedding_.copy()
    new = frame(40, seed=5)
    out = umap.transform(new)
    assert out.index.equals(new.index) and len(out) == 40
    np.testing.assert_array_equal(umap._model().embedding_, before)
    # new rows land near the training rows of their own cluster
    train_out = umap.transform(frame())
    right = new["acc_a"] + new["acc_b"] > 0
    centre = train_out.loc[frame()["acc_a"] + frame()["acc_b"] > 0, ["umap_0", "umap_1"]].mean().to_numpy()
    other = train_out.loc[frame()["acc_a"] + frame()["acc_b"] <= 0, ["umap_0", "umap_1"]].mean().to_numpy()
    pts = out.loc[right, ["umap_0", "umap_1"]].to_numpy()
    assert (np.linalg.norm(pts - centre, axis=1) < np.linalg.norm(pts - other, axis=1)).mean() > 0.9


def test_groups_by_list_and_modality_and_in_a_plain_pipeline():
    X = frame(60)
    by_list = Umap(group=["acc_a", "age"], n_components=1, n_neighbors=5, keep_others=False, prefix="emb")
    out = Pipeline([("umap", clone(by_list))]).fit(X).transform(X)
    assert list(out.columns) == ["emb0"]
    schema = Schema.infer(X)
    numeric = Umap(group="numeric", n_neighbors=5).fit(X, schema=schema)
    assert numeric.group_ == ["acc_a", "acc_b", "acc_c", "age"]
    assert list(numeric.get_feature_names_out()) == ["city", "umap_0", "umap_1"]
