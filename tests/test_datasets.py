"""Built-in datasets: loading, determinism, schema, the file reader, credit's ground truth."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forgeline.core import ROW_ID, Dataset, InputError, Modality, Role, StageContext, Table
from forgeline.plugins.datasets import forgeline_datasets
from forgeline.plugins.datasets.credit import Credit, lightly_edit
from forgeline.plugins.datasets.files import FileDataset
from forgeline.plugins.datasets.sklearn_builtin import Diabetes, Digits
from forgeline.plugins.datasets.synthetic import Reviews, Shapes, Signals

# generated datasets at a size that keeps the tests fast
FILES = Path(tempfile.mkdtemp(prefix="forgeline-credit-files-"))
atexit.register(shutil.rmtree, FILES, True)
SMALL = {"credit": {"rows": 2000}, "shapes": {"rows": 400}, "signals": {"rows": 400}, "reviews": {"rows": 400},
         "credit-files": {"rows": 2000, "files": 2, "folder": str(FILES)}}
BUILT_IN = [cls for cls in forgeline_datasets() if cls.name != "file"]


def load(cls: type[Dataset], seed: int = 0, **params) -> Table:
    return cls({**SMALL.get(cls.name, {}), **params}).load(StageContext(seed=seed))


def test_hook_returns_every_dataset_once():
    names = [cls.name for cls in forgeline_datasets()]
    assert sorted(names) == sorted({"file", "breast-cancer", "digits", "wine", "diabetes", "credit",
                                    "credit-files", "shapes", "signals", "reviews"})
    for cls in forgeline_datasets():
        assert issubclass(cls, Dataset) and cls.summary()
        for field_name, field in cls.Params.model_fields.items():
            assert field.description, f"{cls.name}.{field_name} has no description"


def test_listing_imports_no_heavy_library():
    code = ("import sys, forgeline.plugins.datasets; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'torch', 'pyarrow', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("cls", BUILT_IN, ids=lambda c: c.name)
def test_dataset_loads_a_well_formed_table(cls):
    dataset = cls(SMALL.get(cls.name))
    table = dataset.load(StageContext(seed=1))
    n = len(table)
    assert n > 0
    assert table.frame.index.name == ROW_ID
    np.testing.assert_array_equal(table.row_ids, np.arange(n))
    assert table.target == cls.default_target and table.target in table.frame.columns
    assert table.frame[table.target].notna().all()
    assert table.schema[table.target].role == Role.TARGET
    assert table.schema.modalities <= dataset.modalities
    assert set(dataset.columns()) == set(table.frame.columns) | set(table.arrays)
    for name, array in table.arrays.items():
        assert len(array) == n and array.dtype == np.float32, name
    assert dataset.problems() == []


@pytest.mark.parametrize("cls", [c for c in BUILT_IN if c.name in SMALL], ids=lambda c: c.name)
def test_generators_are_deterministic_by_seed(cls):
    a, b, other = load(cls, seed=7), load(cls, seed=7), load(cls, seed=8)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != other.fingerprint()
    if "ground_truth" in a.meta:
        pd.testing.assert_frame_equal(a.meta["ground_truth"], b.meta["ground_truth"])


def test_digits_as_image_gives_an_image_array():
    pixels = Digits().load()
    images = Digits(as_image=True, scale=True)
    table = images.load()
    assert images.modalities == {Modality.IMAGE} and Digits().modalities == {Modality.NUMERIC}
    assert table.arrays["image"].shape == (1797, 1, 8, 8)
    assert list(table.frame.columns) == ["target"]
    assert table.schema["image"].modality == Modality.IMAGE
    np.testing.assert_allclose(table.arrays["image"].reshape(1797, 64) * 16, pixels.X.to_numpy())
    assert table.arrays["image"].max() <= 1.0


def test_diabetes_is_regression_with_unscaled_option():
    table = Diabetes(scaled=False).load()
    assert table.meta["task"] == "regression"
    assert table.frame["age"].between(18, 90).all()  # years, not centred values
    assert table.y.dtype.kind == "f"


# ---------------------------------------------------------------------------- file

@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.5, 2.0, None], "b": ["x", "y", "z"], "label": [0, 1, 0]})


def test_file_reads_csv_and_parquet(tmp_path, frame):
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    for name in ("d.csv", "d.parquet"):
        dataset = FileDataset(path=str(tmp_path / name))
        assert dataset.problems() == []
        assert dataset.columns() == ["a", "b", "label"]
        table = dataset.load()
        np.testing.assert_array_equal(table.row_ids, [0, 1, 2])
        pd.testing.assert_frame_equal(table.frame.reset_index(drop=True), frame, check_dtype=False)
        assert table.meta["source"]["format"] == name.split(".")[1]


def test_file_passes_the_conformance_kit(tmp_path, frame):
    from forgeline.registry.conformance import check_component

    frame.to_parquet(tmp_path / "d.parquet", index=False)
    assert check_component(FileDataset(path=str(tmp_path / "d.parquet"))) == []


def test_file_csv_options_and_column_subset(tmp_path):
    (tmp_path / "d.tsv").write_text("a\tb\tc\n1\t?\tq\n2\t3\tr\n")
    table = FileDataset(path=str(tmp_path / "d.tsv"), na_values=["?"], columns=["c", "b"]).load()
    assert list(table.frame.columns) == ["c", "b"]
    assert table.frame["b"].isna().tolist() == [True, False]
    (tmp_path / "semi.txt").write_text("a;b\n1;2\n")
    assert FileDataset(path=str(tmp_path / "semi.txt"), sep=";").columns() == ["a", "b"]
    assert FileDataset(path=str(tmp_path / "d.tsv"), columns=["c", "nope"]).problems()[0][0] == "columns"


def test_file_problems_name_the_path_and_the_remedy(tmp_path):
    missing = tmp_path / "missing.csv"
    [(field, message)] = FileDataset(path=str(missing)).problems()
    assert field == "path" and str(missing) in message and "no such file" in message

    (tmp_path / "d.xlsx").write_text("a,b\n1,2\n")
    [(field, message)] = FileDataset(path=str(tmp_path / "d.xlsx")).problems()
    assert field == "format" and ".xlsx" in message and "format: csv" in message
    # an explicit format overrides the extension
    assert FileDataset(path=str(tmp_path / "d.xlsx"), format="csv").problems() == []

    (tmp_path / "bad.parquet").write_text("not parquet at all")
    [(field, message)] = FileDataset(path=str(tmp_path / "bad.parquet")).problems()
    assert field == "path" and "cannot read the PARQUET header" in message
    with pytest.raises(InputError, match="bad.parquet"):
        FileDataset(path=str(tmp_path / "bad.parquet")).load()


def test_file_without_rows_is_an_input_error(tmp_path):
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="header.csv has no rows"):
        FileDataset(path=str(tmp_path / "header.csv")).load()
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in FileDataset(path=str(tmp_path / "empty.csv")).problems()[0][1]
    with pytest.raises(InputError, match="empty.csv"):
        FileDataset(path=str(tmp_path / "empty.csv")).load()
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(InputError, match="none.parquet has no rows"):
        FileDataset(path=str(tmp_path / "none.parquet")).load()


def test_file_columns_reads_only_the_header(tmp_path):
    # the last line has too many fields: reading past the header would fail
    (tmp_path / "d.csv").write_text("a,b\n" + "1,2\n" * 100 + "1,2,3,4\n")
    dataset = FileDataset(path=str(tmp_path / "d.csv"))
    assert dataset.columns() == ["a", "b"] and dataset.problems() == []
    with pytest.raises(InputError, match="cannot read it as CSV"):
        dataset.load()


# ---------------------------------------------------------------------------- credit

@pytest.fixture(scope="module")
def credit() -> Table:
    return Credit(rows=4000, outlier_rate=0.02, missing_rate=0.03, duplicate_rate=0.04,
                  label_noise=0.05).load(StageContext(seed=3))


def test_credit_ground_truth_rates_and_disjointness(credit):
    truth = credit.meta["ground_truth"]
    assert truth.index.equals(credit.frame.index)
    counts = truth[["outlier", "missing", "duplicate", "label_noise"]].sum()
    assert counts.to_dict() == {"outlier": 80, "missing": 120, "duplicate": 160, "label_noise": 200}
    assert (truth[["outlier", "missing", "duplicate", "label_noise"]].sum(axis=1) <= 1).all()
    originals = truth.loc[truth.duplicate, "duplicate_of"]
    assert not truth.loc[originals, ["outlier", "missing", "duplicate", "label_noise"]].any().any()


def test_credit_label_noise_and_true_label_match_the_target(credit):
    truth, y = credit.meta["ground_truth"], credit.y
    assert (y[truth.label_noise] != truth.true_label[truth.label_noise]).all()
    assert (y[~truth.label_noise] == truth.true_label[~truth.label_noise]).all()


def test_credit_missing_values_are_exactly_the_flagged_rows(credit):
    truth = credit.meta["ground_truth"]
    features = credit.frame.drop(columns=["comment", "default"])
    np.testing.assert_array_equal(features.isna().any(axis=1).to_numpy(), truth.missing.to_numpy())
    assert features[truth.missing.to_numpy()].isna().sum(axis=1).between(1, 2).all()


def test_credit_duplicates_copy_numbers_and_edit_text_lightly(credit):
    truth, frame = credit.meta["ground_truth"], credit.frame
    dup_ids = truth.index[truth.duplicate]
    copies, originals = frame.loc[dup_ids], frame.loc[truth.duplicate_of[dup_ids]]
    values = frame.columns.drop("comment")
    pd.testing.assert_frame_equal(copies[values].reset_index(drop=True),
                                  originals[values].reset_index(drop=True))
    assert (truth.duplicate_of[~truth.duplicate] == -1).all()
    changed = 0
    for copy, original in zip(copies.comment, originals.comment):
        a, b = set(copy.lower().strip(".!").split()), set(original.lower().strip(".!").split())
        assert len(a ^ b) <= 6, (copy, original)  # the same words, give or take a few
        changed += copy != original
    assert changed >= 0.9 * len(dup_ids)
    # unrelated comments differ a lot: near-duplicate detection has something to find
    sample = frame.comment[~truth.duplicate].iloc[:200].str.lower().str.split().map(set)
    overlaps = [len(s & t) / len(s | t) for s, t in zip(sample.iloc[:100], sample.iloc[100:])]
    assert np.mean(overlaps) < 0.5


def test_credit_outliers_lie_beyond_three_sigma(credit):
    truth, frame = credit.meta["ground_truth"], credit.frame
    numeric = frame.select_dtypes("number").drop(columns="default")
    z = (numeric - numeric.mean()) / numeric.std()
    for row_id, column in truth.loc[truth.outlier, "outlier_column"].items():
        assert z.at[row_id, column] > 3, (row_id, column)
    assert truth.outlier_column[~truth.outlier].isna().all()


def test_credit_target_is_learnable_and_comment_is_text(credit):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import RobustScaler

    assert credit.schema["comment"].modality == Modality.TEXT
    assert credit.schema["employment"].modality == Modality.CATEGORICAL
    X = pd.get_dummies(credit.frame.drop(columns=["comment", "default"]), dummy_na=True).astype(float)
    X["utilisation"] = X.balance / X.credit_limit
    truth = credit.meta["ground_truth"]
    model = make_pipeline(SimpleImputer(strategy="median"), RobustScaler(), LogisticRegression(max_iter=1000))
    model.fit(X.iloc[:3000], credit.y.iloc[:3000])
    auc = roc_auc_score(truth.true_label.iloc[3000:], model.predict_proba(X.iloc[3000:])[:, 1])
    assert auc > 0.75
    assert 0.08 < truth.true_label.mean() < 0.3


def test_credit_rejects_rates_that_need_more_rows_than_it_has():
    dataset = Credit(rows=100, duplicate_rate=0.25, outlier_rate=0.25, missing_rate=0.25, label_noise=0.1)
    [(field, message)] = dataset.problems()
    assert field == "duplicate_rate" and "lower the rates" in message
    with pytest.raises(InputError, match="distinct rows"):
        dataset.load()


def test_lightly_edit_keeps_most_words():
    rng = np.random.default_rng(0)
    text = "Client disputed the late fee on the visa card by phone yesterday. Case closed. Ref 48213."
    for _ in range(50):
        edited = lightly_edit(text, rng)
        assert abs(len(edited.split()) - len(text.split())) <= 2
        assert len(set(edited.lower().split()) & set(text.lower().split())) >= len(text.split()) - 4


# ---------------------------------------------------------------------------- synthetic

def _fit_score(X: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy of a logistic regression: the data must be learnable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    half = len(y) // 2
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X[:half], y[:half])
    return model.score(X[half:], y[half:])


def test_shapes_are_learnable():
    table = Shapes(rows=600, noise=0.1).load(StageContext(seed=0))
    images = table.arrays["image"]
    assert images.shape == (600, 1, 16, 16) and table.schema["image"].modality == Modality.IMAGE
    assert set(table.y) == {0, 1, 2, 3} and table.meta["classes"] == ["square", "circle", "cross", "triangle"]
    assert _fit_score(images.reshape(len(images), -1), table.y.to_numpy()) > 0.6  # chance: 0.25


def test_signals_are_learnable_from_their_spectrum():
    table = Signals(rows=600, channels=2, length=64, max_cycles=4).load(StageContext(seed=0))
    series = table.arrays["series"]
    assert series.shape == (600, 2, 64) and table.schema["series"].modality == Modality.SERIES
    spectrum = np.abs(np.fft.rfft(series, axis=-1)).reshape(len(series), -1)
    assert _fit_score(spectrum, table.y.to_numpy()) > 0.6  # chance: 0.25


def test_signals_reject_aliased_frequencies():
    [(field, _)] = Signals(length=32, max_cycles=6).problems()
    assert field == "max_cycles"


def test_reviews_are_learnable_from_words():
    from sklearn.feature_extraction.text import CountVectorizer

    table = Reviews(rows=600, noise=0.2).load(StageContext(seed=0))
    assert table.schema["text"].modality == Modality.TEXT
    assert table.frame.text.str.len().between(30, 400).all()
    assert table.frame.text.nunique() > 0.95 * len(table)
    X = CountVectorizer().fit_transform(table.frame.text).toarray()
    assert _fit_score(X, table.y.to_numpy()) > 0.8  # chance: about 0.5


def test_credit_files_are_written_once_file_by_file_and_read_back(tmp_path: Path) -> None:
    from forgeline.plugins.datasets.credit_files import CreditFiles

    ds = CreditFiles(rows=1000, files=3, folder=str(tmp_path))
    files = ds.files(StageContext(seed=4))
    assert len(files) == 3 and [len(pd.read_parquet(f)) for f in files] == [334, 333, 333]
    stamps = [f.stat().st_mtime_ns for f in files]
    table = ds.load(StageContext(seed=4))
    assert [f.stat().st_mtime_ns for f in ds.files(StageContext(seed=4))] == stamps  # reused, not rewritten
    assert len(table) == 1000 and table.target == "default"
    assert table.meta["ground_truth"].index.equals(table.frame.index)
    assert ds.files(StageContext(seed=5))[0].parent != files[0].parent  # another seed, other files
    assert CreditFiles(rows=100, files=20, folder=str(tmp_path)).problems()[0][0] == "files"
