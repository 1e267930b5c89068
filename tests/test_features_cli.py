"""The feature transforms through the real CLI: a run's report, and bad input as one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ENV = {"OMP_NUM_THREADS": "1"}  # HistGradientBoosting's OpenMP threads crawl on a busy 2-core machine


def pipeline(tmp_path: Path, features: list[dict]) -> Path:
    file = tmp_path / "p.yaml"
    file.write_text(yaml.safe_dump({"name": "feat", "seed": 1,
                                    "data": {"source": "credit", "with": {"rows": 300}, "target": "default",
                                             "split": {"test": 0.25, "stratify": True}},
                                    "features": features}))
    return file


@pytest.mark.parametrize("features, message", [
    ([{"use": "umap", "with": {"group": "accounts"}}], "umap: unknown feature group 'accounts'"),
    ([{"use": "umap", "with": {"group": ["age", "employment"]}}],
     "umap: column 'employment' has dtype category; only numeric columns can be used"),
    ([{"use": "shap-select", "with": {"keep": 40}}],
     "shap-select: keep=40 is larger than the 10 scorable feature(s) there are; use at most 10"),
    ([{"use": "l1-rfe", "with": {"min_features": 9}}],
     "l1-rfe: min_features=9 is larger than the 7 numeric feature(s) there are"),
])
def test_bad_feature_input_is_one_line_and_exit_2(tmp_path, run_forgeline, features, message):
    r = run_forgeline("run", str(pipeline(tmp_path, features)), "--out", str(tmp_path / "runs"), env=ENV)
    assert r.returncode == 2, r.stderr[-1500:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("error") or "features.0" in line]
    assert len(lines) == 1 and message in lines[0] and "features.0" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_run_reports_features_in_and_out_and_writes_shap_artifacts(tmp_path, run_forgeline):
    file = pipeline(tmp_path, [{"use": "cross", "with": {"max_crosses": 4}},
                               {"use": "shap-select", "with": {"keep": 5, "background": 50}}])
    r = run_forgeline("run", str(file), "--out", str(tmp_path / "runs"), "--json", env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = next((tmp_path / "runs").iterdir())
    stages = {s["id"]: s for s in json.loads((run_dir / "manifest.json").read_text())["stages"]}
    cross, shap = stages["features.0"]["report"], stages["features.1"]["report"]
    assert cross["features_in"] == 11 and cross["features_out"] == 15 and len(cross["added"]) == 4
    assert shap["features_in"] == 15 and shap["features_out"] == 6  # top 5 + the text column passed through
    assert shap["passed_through"] == ["comment"] and len(shap["ranking"]) == 14
    art = run_dir / "artifacts" / "features.1"
    assert {p.name for p in art.iterdir()} == {"shap-ranking.csv", "shap-ranking.json", "shap-summary.png"}
