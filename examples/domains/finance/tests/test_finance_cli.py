"""``forgeline models ...`` through the real CLI (plugin command hook) and the example pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FORGELINE = Path(sys.executable).parent / "forgeline"
PIPELINE = Path(__file__).parents[1] / "pipelines" / "credit-woe.yaml"


def forgeline(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "FORGELINE_DISABLE_PLUGINS"}
    return subprocess.run([sys.executable, str(FORGELINE), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_pipeline_runs_and_models_commands_version_it(tmp_path):
    run = forgeline("run", str(PIPELINE), "--out", str(tmp_path / "runs"), "--set", "data.with.rows=600",
                    "--set", "train.epochs=2")
    assert run.returncode == 0, run.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    woe = next(s for s in manifest["stages"] if s["name"] == "woe-binning")["report"]
    assert woe["information_value"]["debt_to_income"] > 0.1 and woe["version"] == 1
    assert next(s for s in manifest["stages"] if s["name"] == "smote-defaults")["report"]["rows_added"] > 0
    assert "test_auc" in manifest["metrics"] or "val_auc" in manifest["metrics"]

    db = str(tmp_path / "models.db")
    for note in ("first", "second"):
        out = forgeline("models", "register", str(run_dir), "--db", db, "--note", note)
        assert out.returncode == 0, out.stderr
    assert forgeline("models", "promote", "credit-woe", "1", "--db", db).returncode == 0
    assert forgeline("models", "promote", "credit-woe", "2", "--db", db).returncode == 0
    back = forgeline("models", "rollback", "credit-woe", "--db", db)
    assert back.returncode == 0 and "version 1 is in production" in back.stdout
    listed = json.loads(forgeline("models", "list", "--json", "--db", db).stdout)
    assert [(v["version"], v["stage"]) for v in listed] == [(1, "production"), (2, "archived")]
    assert listed[0]["fingerprints"]["credit-applicants"]["rows"] == 600


def test_models_bad_input_is_one_line_exit_2(tmp_path):
    out = forgeline("models", "promote", "credit-woe", "9", "--db", str(tmp_path / "m.db"))
    assert out.returncode == 2 and "no version 9" in out.stderr and "Traceback" not in out.stderr
    out = forgeline("models", "register", str(tmp_path), "--db", str(tmp_path / "m.db"))
    assert out.returncode == 2 and "not a run folder" in out.stderr
