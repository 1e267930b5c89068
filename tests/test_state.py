"""Fitted state is data: saved as JSON/.npy/.skops, reloaded through the catalog, and a run
folder with a planted payload runs no code when applied (issue 14)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import forgeline.core.api as fl
from forgeline.core import InputError, Kind, Modality, StageContext, Table
from forgeline.core.runfolder import write_atomic
from forgeline.core.state import STATE_FILE, load_component, save_component

from conftest import run_cli


@pytest.fixture(scope="module")
def catalog():
    return fl.catalog()


@pytest.fixture(scope="module")
def credit(catalog) -> tuple[Table, Table]:
    """Training and new rows of the credit generator (numbers, categories, comments, faults)."""
    cls = catalog.get(Kind.DATASET, "credit").cls
    train = cls(rows=400).load(StageContext(seed=1))
    new = cls(rows=150).load(StageContext(seed=2))
    return train, new


def _reloaded(component, tmp_path: Path, catalog):
    folder = tmp_path / "stages" / "s"
    save_component(folder, component, "forgeline", write_atomic)
    assert not list(tmp_path.rglob("*.pkl"))
    return load_component(folder / STATE_FILE, catalog, tmp_path)


CLEANERS = [
    ("sigma-outliers", {"k": 2.5, "robust": True}),
    ("impute", {"multiple": 2, "max_iter": 3}),
    ("impute", {"strategy": "most-frequent"}),
    ("dedup", {"method": "simhash", "columns": ["comment"]}),
    ("dedup", {"method": "minhash", "columns": ["comment"], "ngram": 1}),
    ("label-consistency", {"estimator": "logistic-regression", "action": "drop"}),
    ("label-consistency", {"estimator": "random-forest", "folds": 3}),
    ("label-consistency", {"estimator": "hist-gradient-boosting", "folds": 3}),
    ("label-consistency", {"estimator": "knn", "folds": 3}),
    ("robust-scale", {"quantile_range": [10.0, 90.0]}),
]


@pytest.mark.parametrize("name,params", CLEANERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CLEANERS)])
def test_every_builtin_cleaner_round_trips_as_data(name, params, credit, catalog, tmp_path) -> None:
    train, new = credit
    if name in ("label-consistency", "robust-scale"):  # these need complete numeric inputs
        imp = catalog.get(Kind.CLEANER, "impute").cls().fit(train)
        train, new = imp.apply(train).table, imp.apply(new).table
    if name == "label-consistency":  # fewer rows: the estimators cross-validate
        train = train.take(train.row_ids[:150])
    cleaner = catalog.get(Kind.CLEANER, name).cls(params).fit(train, StageContext(seed=3))
    again = _reloaded(cleaner, tmp_path, catalog)
    assert type(again) is type(cleaner) and again.params == cleaner.params
    a, b = cleaner.apply(new), again.apply(new)
    pd.testing.assert_frame_equal(a.table.frame, b.table.frame)
    pd.testing.assert_frame_equal(a.removed, b.removed)
    assert np.array_equal(a.flagged, b.flagged)


def test_model_input_encodings_round_trip_as_data(credit, catalog, tmp_path) -> None:
    train, new = credit
    imp = catalog.get(Kind.CLEANER, "impute").cls().fit(train)
    train, new = imp.apply(train).table, imp.apply(new).table
    for name, params in [("mlp", {}), ("text-classifier", {"column": "comment"})]:
        model = catalog.get(Kind.MODEL, name).cls(params)
        model.fit_inputs(train)
        again = _reloaded(model, tmp_path / name, catalog)
        assert np.array_equal(model.inputs(new).numpy(), again.inputs(new).numpy())
        assert again.feature_names == model.feature_names


def test_series_encoding_round_trips(catalog, tmp_path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"y": rng.integers(0, 2, 30)})
    table = Table.from_frame(frame, target="y", arrays={"signal": rng.normal(size=(30, 2, 16))})
    model = catalog.get(Kind.MODEL, "tcn").cls()
    model.fit_inputs(table)
    again = _reloaded(model, tmp_path, catalog)
    assert np.array_equal(model.inputs(table).numpy(), again.inputs(table).numpy())


def test_state_that_is_not_data_is_refused_when_saved(catalog, tmp_path) -> None:
    cleaner = catalog.get(Kind.CLEANER, "robust-scale").cls()
    cleaner.hook_ = lambda x: x  # a function is code, not data
    with pytest.raises(TypeError, match="hook_ is function"):
        save_component(tmp_path / "s", cleaner, "forgeline", write_atomic)


def test_pandas_and_plain_values_round_trip(catalog, tmp_path) -> None:
    cleaner = catalog.get(Kind.CLEANER, "robust-scale").cls()
    state = {"s_": pd.Series([1.5, np.nan], index=pd.Index(["a", "b"], name="k"), name="v"),
             "f_": pd.DataFrame({"x": [1, 2], "c": pd.Categorical(["u", "v"])}),
             "t_": (1, np.int64(2), "x", None), "d_": {1: [np.float32(0.5)], "__k": True},
             "o_": np.array(["a", 1], dtype=object), "n_": np.arange(6, dtype=np.uint8).reshape(2, 3)}
    cleaner.load_state(state)
    again = _reloaded(cleaner, tmp_path, catalog).state()
    pd.testing.assert_series_equal(again["s_"], state["s_"])
    pd.testing.assert_frame_equal(again["f_"], state["f_"])
    assert again["t_"] == state["t_"] and type(again["t_"][1]) is np.int64
    assert again["d_"] == state["d_"] and type(again["d_"][1][0]) is np.float32
    assert again["o_"].tolist() == ["a", 1] and again["n_"].dtype == np.uint8


# --------------------------------------------------------------------------- planted payloads

class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    f = out / "p.yaml"
    f.write_text("name: w\ndata: {source: wine}\nclean:\n  - use: impute\n  - use: robust-scale\n")
    r = run_cli("run", str(f), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    (manifest,) = out.glob("*/manifest.json")
    from sklearn.datasets import load_wine

    load_wine(as_frame=True).frame.head(20).to_csv(out / "new.csv", index=False)
    return manifest.parent


def _copy(run: Path, tmp_path: Path) -> tuple[Path, dict]:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, json.loads((copy / "manifest.json").read_text())


def _set_state(run: Path, manifest: dict, stage: str, state: str) -> None:
    next(s for s in manifest["stages"] if s["id"] == stage)["report"]["state"] = state
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_the_payload_would_run_if_unpickled(tmp_path) -> None:
    """The planted file is a real attack: plain pickle.load runs it (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_apply_runs_no_code_from_a_planted_pickle(fitted_run, tmp_path) -> None:
    run, manifest = _copy(fitted_run, tmp_path)
    marker = tmp_path / "pwned"
    (run / "stages" / "evil.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    _set_state(run, manifest, "clean.0", "stages/evil.pkl")
    r = run_cli("apply", str(run), str(fitted_run.parent / "new.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.returncode == 2 and not marker.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "evil.pkl: not a forgeline state file" in r.stderr


def test_apply_runs_no_code_from_a_pickled_array(fitted_run, tmp_path) -> None:
    run, _ = _copy(fitted_run, tmp_path)
    marker = tmp_path / "pwned"
    state = json.loads((run / "stages" / "clean.1-robust-scale" / STATE_FILE).read_text())
    state["state"]["columns_"] = {"__ndarray__": "evil.npy"}  # an object array: numpy would unpickle it
    (run / "stages" / "clean.1-robust-scale" / STATE_FILE).write_text(json.dumps(state))
    np.save(run / "stages" / "clean.1-robust-scale" / "evil.npy",
            np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    r = run_cli("apply", str(run), str(fitted_run.parent / "new.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.returncode == 2 and not marker.exists()
    assert "evil.npy: not a plain numpy array" in r.stderr and "Traceback" not in r.stderr


def test_apply_refuses_untrusted_types_in_a_skops_file(fitted_run, tmp_path) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    run, _ = _copy(fitted_run, tmp_path)
    (sk,) = (run / "stages" / "clean.1-robust-scale").glob("*.skops")
    sk.write_bytes(skops.io.dumps(FunctionTransformer(func=os.system, kw_args={"command": "true"})))
    r = run_cli("apply", str(run), str(fitted_run.parent / "new.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.returncode == 2, r.stderr
    assert "holds types forgeline does not load" in r.stderr and "system" in r.stderr


@pytest.mark.parametrize("path", ["../outside/state.json", "/etc/passwd", "stages/../../x/state.json"])
def test_apply_refuses_state_paths_out_of_the_run_folder(fitted_run, tmp_path, path) -> None:
    run, manifest = _copy(fitted_run, tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(run / "stages" / "clean.0-impute", outside)
    _set_state(run, manifest, "clean.0", path)
    r = run_cli("apply", str(run), str(fitted_run.parent / "new.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.returncode == 2 and "leaves the run folder" in r.stderr
    with pytest.raises(InputError, match="leaves the run folder"):
        fl.open_run(run)


def test_apply_checks_columns_before_reading_any_state(fitted_run, tmp_path) -> None:
    run, _ = _copy(fitted_run, tmp_path)
    for f in (run / "stages").rglob("*.npy"):
        f.write_bytes(b"garbage")  # never read: the columns are wrong first
    frame = pd.read_csv(fitted_run.parent / "new.csv").drop(columns=["alcohol"]).assign(extra=1)
    frame.to_csv(tmp_path / "bad.csv", index=False)
    r = run_cli("apply", str(run), str(tmp_path / "bad.csv"), "-o", str(tmp_path / "out.csv"))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "missing columns the run was fitted on: alcohol" in line and "columns the run does not know: extra" in line


def test_reopened_run_applies_like_the_run_in_memory(credit, catalog, tmp_path) -> None:
    run = fl.run({"name": "c", "seed": 4, "data": {"source": "credit", "with": {"rows": 400}, "target": "default"},
                  "clean": [{"use": "sigma-outliers"}, {"use": "impute", "with": {"multiple": 2, "max_iter": 3}},
                            {"use": "dedup", "with": {"method": "minhash", "columns": ["comment"], "ngram": 1}},
                            {"use": "label-consistency", "with": {"action": "drop", "folds": 3}},
                            {"use": "robust-scale"}]}, out=tmp_path, catalog_=catalog)
    frame = credit[1].frame.reset_index(drop=True)
    a, b = run.apply(frame), fl.open_run(run.dir, catalog).apply(frame)
    pd.testing.assert_frame_equal(a.table.frame, b.table.frame)
    pd.testing.assert_frame_equal(a.removed, b.removed)


@pytest.mark.parametrize(("name", "params"), [("umap", {"n_neighbors": 10}), ("cross", {}), ("l1-rfe", {"cv": 3}),
                                              ("shap-select", {"keep": 3})])
def test_every_builtin_feature_transform_round_trips_as_data(name, params, credit, catalog, tmp_path) -> None:
    train, new = credit
    imp = catalog.get(Kind.CLEANER, "impute").cls().fit(train)
    train, new = imp.apply(train).table, imp.apply(new).table
    numeric = train.schema.features(Modality.NUMERIC)
    X, y = (train.X[numeric], train.y) if name in ("umap", "l1-rfe") else (train.X, train.y)
    transform = catalog.get(Kind.FEATURE_TRANSFORM, name).cls(params).fit(X, y)
    again = _reloaded(transform, tmp_path, catalog)
    pd.testing.assert_frame_equal(transform.transform(new.X[X.columns]), again.transform(new.X[X.columns]))
