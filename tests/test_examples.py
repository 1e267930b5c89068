"""Every example pipeline validates, runs (shrunk to test size) and leaves a self-contained report;
the training scenarios learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_self_contained_report

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "pipelines").glob("*.yaml"))


def forgeline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgeline.core.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates(example: Path) -> None:
    r = forgeline("validate", str(example))
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


@pytest.mark.parametrize(("example", "sets", "metric", "floor"), [
    ("digits-cnn", ["train.epochs=2"], "val_accuracy", 0.8),                      # images, bf16
    ("signals-tcn", ["data.with.rows=400", "train.epochs=3"], "val_accuracy", 0.4),  # series (chance 0.25)
    ("signals-tcn", ["data.with.rows=200", "train.epochs=1", "train.precision=fp16"], "val_loss", None),
])
def test_training_examples_learn(example: str, sets: list[str], metric: str, floor: float | None, tmp_path: Path) -> None:
    args = [a for s in sets for a in ("--set", s)]
    path = next(p for p in EXAMPLES if p.stem == example)
    r = forgeline("run", str(path), "--out", str(tmp_path), "--json", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["status"] == "succeeded"
    page = assert_self_contained_report(Path(summary["run"]))
    assert 'id="training"' in page
    value = summary["metrics"][metric]
    assert value == value  # finite, not NaN
    if floor is not None:
        assert value > floor


@pytest.mark.parametrize(("example", "sets", "nproc", "sections"), [
    ("credit-risk", ["data.with.rows=600", "train.epochs=1"], "1", ["data-quality", "training"]),
    ("clean-credit", ["data.with.rows=600"], "1", ["data-quality"]),
    ("wine-ddp", ["train.epochs=2"], "2", ["data-quality", "training"]),
    ("augment-digits", ["train.epochs=1"], "1", ["training"]),
    ("augment-reviews", ["data.with.rows=200", "train.epochs=1"], "1", ["training"]),
    ("augment-signals", ["data.with.rows=200", "train.epochs=1"], "1", ["training"]),
    ("features-credit", ["data.with.rows=800", "train.epochs=1"], "1", ["data-quality", "features", "training"]),
])
def test_other_examples_run_and_report(example: str, sets: list[str], nproc: str, sections: list[str],
                                       tmp_path: Path) -> None:
    path = next(p for p in EXAMPLES if p.stem == example)
    args = [a for s in sets for a in ("--set", s)]
    r = forgeline("run", str(path), "--out", str(tmp_path), "--json", "--nproc", nproc, *args)
    assert r.returncode == 0, r.stderr[-2000:]
    page = assert_self_contained_report(Path(json.loads(r.stdout)["run"]))
    for section in ["overview", "pipeline", *sections]:
        assert f'<section id="{section}">' in page


def test_clean_large_dask_example_cleans_on_a_local_cluster_and_trains(tmp_path: Path) -> None:
    """The example shrunk to 6,000 rows in 3 files (its full size is in BENCHMARKS.md)."""
    pytest.importorskip("distributed")
    path = next(p for p in EXAMPLES if p.stem == "clean-large-dask")
    sets = ["data.with.rows=6000", "data.with.files=3", f"data.with.folder={tmp_path / 'files'}",
            "data.with.duplicate_rate=0.01", "clean.3.with.sample_rows=2000"]  # sampled: judged on workers
    r = forgeline("run", str(path), "--out", str(tmp_path / "runs"), "--json", *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 0, r.stderr[-2000:]
    run = Path(json.loads(r.stdout)["run"])
    page = assert_self_contained_report(run)
    assert '<section id="training">' in page
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"][0]["report"]["partitions"] == 3
    label = next(s for s in manifest["stages"] if s["id"] == "clean.3")["report"]
    assert label["details"]["judged"].startswith("a hash sample of")
    peaks = label["worker_peak_memory_mib"]
    assert len(peaks) == 2 and all(0 < p < 1024 for p in peaks)  # two workers, under their 1GiB limit
    for split in ("train", "valid", "test"):
        assert sorted((run / "cleaned" / split).glob("part-*.parquet"))
    assert len(list((tmp_path / "files").rglob("part-*.parquet"))) == 3


def test_every_example_is_run_by_a_test() -> None:
    ran = {"digits-cnn", "signals-tcn", "credit-risk", "clean-credit", "wine-ddp", "augment-digits",
           "augment-reviews", "augment-signals", "features-credit", "clean-large-dask",
           "tune-compress"}  # tune-compress: tests/test_tune_compress.py, end to end with its report
    assert {p.stem for p in EXAMPLES} <= ran, "run the new example in this file (and check its report)"
