"""`forgeline run` / `apply` end to end: the real CLI in a subprocess, real run folders."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from conftest import pip_install_target, run_cli, write_distribution

ROOT = Path(__file__).resolve().parents[1]


def forgeline(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env, timeout=600)


def run_dir(out: Path) -> Path:
    (manifest,) = out.glob("*/manifest.json")
    return manifest.parent


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def credit_run(tmp_path_factory) -> Path:
    """The main example, shrunk: five cleaners and an MLP on the credit-risk generator."""
    out = tmp_path_factory.mktemp("runs")
    r = forgeline("run", str(ROOT / "examples/pipelines/credit-risk.yaml"), "--out", str(out), "--quiet",
                  "--set", "data.with.rows=1500", "--set", "train.epochs=2", "--set", "train.checkpoint.every_steps=5")
    assert r.returncode == 0, r.stderr
    return run_dir(out)


def test_run_writes_the_full_run_folder(credit_run: Path) -> None:
    m = json.loads((credit_run / "manifest.json").read_text())
    assert m["status"] == "succeeded"
    assert [s["id"] for s in m["stages"]] == ["data", "clean.0", "clean.1", "clean.2", "clean.3", "clean.4", "train"]
    assert all(s["status"] == "succeeded" for s in m["stages"])
    resolved = m["pipeline"]["resolved"]
    assert "sigma-outliers" in json.dumps(resolved) and "forgeline" in json.dumps(resolved)
    assert m["pipeline"]["given"]["data"]["with"]["rows"] == 1500  # overrides recorded as given
    assert m["environment"]["torch"] and m["environment"]["python"]
    (fp,) = m["inputs"].values()
    assert fp["rows"] == 1500 and len(fp["sha256"]) == 64
    assert {"val_loss", "val_accuracy", "val_auc", "test_accuracy"} <= set(m["metrics"])
    assert (credit_run / "model" / "weights.pt").is_file()
    assert list((credit_run / "checkpoints").glob("*.pt"))
    assert list((credit_run / "stages").glob("clean.*/state.json")) and not list(credit_run.rglob("*.pkl"))
    assert (credit_run / "stages" / "model-inputs" / "state.json").is_file()
    events = {r["event"] for r in records(credit_run)}
    assert {"run", "stage", "step", "epoch"} <= events


def test_every_removed_row_is_quarantined_with_stage_and_reason(credit_run: Path) -> None:
    m = json.loads((credit_run / "manifest.json").read_text())
    data = m["stages"][0]["report"]
    assert sum(data["splits"].values()) == 1500
    for stage in m["stages"][1:6]:
        for split, rep in stage["report"].items():
            if split in ("train", "valid", "test"):
                assert rep["rows_in"] == rep["rows_out"] + rep["removed"], (stage["id"], split)
    removed = sum(rep["removed"] for s in m["stages"][1:6] for k, rep in s["report"].items()
                  if k in ("train", "valid", "test"))
    files = list((credit_run / "quarantine").glob("*.csv"))
    quarantined = pd.concat([pd.read_csv(f) for f in files]) if files else pd.DataFrame()
    assert len(quarantined) == removed > 0
    assert {"row_id", "stage", "split", "reason"} <= set(quarantined.columns)
    assert quarantined["reason"].notna().all()


def test_cleaning_reports_quality_against_ground_truth(credit_run: Path) -> None:
    m = json.loads((credit_run / "manifest.json").read_text())
    by_name = {s["name"]: s["report"]["train"] for s in m["stages"][1:6]}
    for name in ("sigma-outliers", "dedup", "label-consistency"):
        det = by_name[name]["detection"]
        assert det["recall"] is not None and det["precision"] is not None, name
    lc = by_name["label-consistency"]
    assert lc["label_noise_after"] < lc["label_noise_before"]


def test_apply_cleans_new_data_with_the_fitted_stages(credit_run: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.csv"
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from forgeline.core import StageContext
        from forgeline.plugins.datasets.credit import Credit
        t = Credit(rows=300).load(StageContext(seed=7))
        t.frame.to_csv({str(new)!r}, index=False)
    """)], check=True)
    out = tmp_path / "clean.csv"
    r = forgeline("apply", str(credit_run), str(new), "-o", str(out))
    assert r.returncode == 0, r.stderr
    cleaned = pd.read_csv(out)
    removed = pd.read_csv(out.with_name("clean.removed.csv")) if out.with_name("clean.removed.csv").exists() else []
    assert len(cleaned) + len(removed) == 300
    numeric = cleaned.select_dtypes("number").drop(columns=["row_id", "default"], errors="ignore")
    assert numeric.notna().all().all()  # imputed with the run's fitted medians


def test_json_summary_and_assembled_pipeline(tmp_path: Path) -> None:
    r = forgeline("run", "--data", "wine", "--clean", "robust-scale", "--train", "mlp", "--name", "wine-cli",
                  "--out", str(tmp_path), "--json", "--set", "train.epochs=3")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["status"] == "succeeded" and summary["metrics"]["val_accuracy"] > 0.5
    assert Path(summary["run"]).name.startswith("wine-cli-")


def test_bad_data_in_a_stage_is_a_one_line_error_naming_the_stage(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("name: bad\ndata: {source: credit, with: {rows: 300}}\n"
                 "clean:\n  - use: sigma-outliers\n    with: {columns: [comment]}\n")
    r = forgeline("run", str(f), "--out", str(tmp_path / "runs"), "--quiet")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "clean.0" in r.stderr and "sigma-outliers" in r.stderr and "comment" in r.stderr
    m = json.loads((run_dir(tmp_path / "runs") / "manifest.json").read_text())
    assert m["status"] == "failed" and m["stages"][0]["status"] == "succeeded"
    assert m["stages"][1]["status"] == "failed"


PLUGIN = '''
from forgeline.core import Cleaner, hookimpl

class Explodes(Cleaner):
    """Fails while cleaning, to test that failures are named."""
    name = "explodes"

    def fit(self, table, ctx=None):
        return self

    def apply(self, table, ctx=None):
        raise ZeroDivisionError("boom")

EVENTS = []

@hookimpl
def forgeline_cleaners():
    return [Explodes]

@hookimpl
def forgeline_stage_started(run, stage):
    assert stage.component is not None and stage.component.name == stage.name  # a handle on the component
    with open(run.dir.parent / "events.txt", "a") as f:
        f.write(f"started {stage.section} {stage.name}\\n")

@hookimpl
def forgeline_stage_finished(run, stage, report):
    with open(run.dir.parent / "events.txt", "a") as f:
        f.write(f"finished {stage.section} {stage.name}\\n")

@hookimpl
def forgeline_run_finished(run, status, error):
    with open(run.dir.parent / "events.txt", "a") as f:
        f.write(f"run {status} {type(error).__name__}\\n")
'''


@pytest.fixture(scope="module")
def failing_plugin(tmp_path_factory) -> dict:
    """A real distribution with a real entry point, installed into its own folder."""
    src = write_distribution(tmp_path_factory.mktemp("src"), "fl-explodes", "0.3.1", "fl_explodes", PLUGIN,
                             entry_point="explodes")
    site = tmp_path_factory.mktemp("site")
    pip_install_target(site, src)
    return {"PYTHONPATH": str(site)}


def test_a_failing_plugin_is_named_and_finished_stages_are_kept(failing_plugin: dict, tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("name: boom\ndata: {source: wine}\nclean:\n  - use: robust-scale\n  - use: explodes\n")
    r = forgeline("run", str(f), "--out", str(tmp_path / "runs"), "--quiet", env=failing_plugin)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "clean.1" in line and "explodes" in line and "fl-explodes" in line and "boom" in line
    run = run_dir(tmp_path / "runs")
    m = json.loads((run / "manifest.json").read_text())
    assert [s["status"] for s in m["stages"]] == ["succeeded", "succeeded", "failed"]
    assert (run / "stages" / "clean.0-robust-scale" / "state.json").is_file()  # what finished is kept
    events = (tmp_path / "runs" / "events.txt").read_text().splitlines()
    assert events == ["started data wine", "finished data wine", "started clean robust-scale",
                      "finished clean robust-scale", "started clean explodes", "run failed StageError"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "hybrid"])
def test_nproc_two_trains_in_parallel_and_rank_zero_writes_once(strategy: str, tmp_path: Path) -> None:
    r = forgeline("run", str(ROOT / "examples/pipelines/wine-ddp.yaml"), "--nproc", "2", "--out", str(tmp_path),
                  "--quiet", "--set", "train.epochs=3", "--set", f"train.parallel.use={strategy}",
                  env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    run = run_dir(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "succeeded" and m["world_size"] == 2
    assert m["pipeline"]["resolved"]["train"]["parallel"]["use"] == strategy
    assert m["metrics"]["val_accuracy"] > 0.5
    epochs = [r for r in records(run) if r["event"] == "epoch"]
    assert len(epochs) == 3  # one record per epoch: written by rank 0 only
    if strategy == "ddp":  # the share of step time spent in gradient all-reduce
        assert 0 < epochs[-1]["comm_share"] < 1
