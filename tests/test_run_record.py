"""Every way a run ends is written, and no run record is lost or shared."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from forgeline.core.runfolder import new_run_dir

from conftest import FORGELINE

WINE = textwrap.dedent("""\
    name: wine-short
    seed: 0
    data: {source: wine}
    clean: [robust-scale]
    train: {model: {use: mlp, with: {hidden: [8]}}, epochs: 1, device: cpu}
    """)


def _pipeline(tmp_path: Path, text: str = WINE, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_runs_started_at_the_same_moment_get_their_own_folders(tmp_path):
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(new_run_dir(tmp_path, "same"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 8 and all(p.is_dir() for p in found)


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, run_forgeline):
    done = run_forgeline("run", str(_pipeline(tmp_path)), "--out", str(tmp_path / "runs"), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert f"run folder: {run}" in done.stderr  # --quiet still says where the run is
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    again = run_forgeline("run", "--resume", str(run))
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_failed_run_prints_its_summary_as_json(tmp_path, run_forgeline):
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n1,2,0\n3,inf,1\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(40)))
    pipeline = _pipeline(tmp_path, textwrap.dedent(f"""\
        name: bad
        data: {{source: {data}, target: y}}
        clean: [robust-scale]
        """))
    done = run_forgeline("run", str(pipeline), "--out", str(tmp_path / "runs"), "--json")
    assert done.returncode == 2, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and "inf" in summary["error"]
    assert [s["status"] for s in summary["stages"]] == ["succeeded", "failed"]


def test_sigterm_ends_the_run_as_interrupted(tmp_path):
    pipeline = _pipeline(tmp_path, WINE.replace("epochs: 1", "epochs: 100000, batch_size: 4"))
    proc = subprocess.Popen([sys.executable, str(FORGELINE), "run", str(pipeline), "--out", str(tmp_path / "runs"),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    manifest = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("*/manifest.json"))
        if found:
            try:
                m = json.loads(found[0].read_text())
            except ValueError:
                m = {}
            if any(s["id"] == "train" for s in m.get("stages", [])):
                manifest = found[0]
                break
        time.sleep(0.05)
    assert manifest is not None, "training never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    m = json.loads(manifest.read_text())
    assert m["status"] == "interrupted" and "SIGTERM" in m["error"]
    assert {s["id"]: s["status"] for s in m["stages"]}["train"] == "failed"
    assert "finished" in m
