"""Every way a run ends is written, and no run record is lost or shared."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import forgeline.core.api as fl
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_wine
from forgeline.core import InputError
from forgeline.core.runfolder import new_run_dir, read_manifest, read_stage_log

from conftest import FORGELINE, run_cli

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


def test_a_run_whose_monitor_cannot_start_is_recorded_as_failed(tmp_path, run_forgeline):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pipeline = _pipeline(tmp_path, WINE + f"monitor:\n  - use: prometheus\n    with: {{port: {port}}}\n")
        r = run_forgeline("run", str(pipeline), "--out", str(tmp_path / "runs"))
    assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr, r.stderr
    for folder in (tmp_path / "runs").glob("*"):  # no folder left saying "running"
        assert read_manifest(folder)["status"] == "failed"


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


@pytest.mark.parametrize("sig, code, error", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "KeyboardInterrupt")])
def test_a_signal_ends_the_run_and_its_stage_as_interrupted(tmp_path, sig, code, error):
    pipeline = _pipeline(tmp_path, WINE.replace("epochs: 1", "epochs: 100000, batch_size: 4"))
    proc = subprocess.Popen([sys.executable, str(FORGELINE), "run", str(pipeline), "--out", str(tmp_path / "runs"),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    manifest = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("*/manifest.json"))
        if found:
            try:
                m = read_manifest(found[0].parent)
            except InputError:
                m = {}
            if any(s["id"] == "train" for s in m.get("stages", [])):
                manifest = found[0]
                break
        time.sleep(0.05)
    assert manifest is not None, "training never started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    m = json.loads(manifest.read_text())
    assert m["status"] == "interrupted" and error in m["error"]
    assert {s["id"]: s["status"] for s in m["stages"]}["train"] == "failed"
    assert "finished" in m


# ------------------------------------------------------------- resume from the last finished stage

#: a plugin whose hooks log every stage and training step started, and stop the run dead at
#: ``PAUSE_AT`` (``stage:<section>`` or ``step:<n>``) until it is killed, after touching ``PAUSE_FLAG``
PAUSE_PLUGIN = textwrap.dedent("""\
    import os, time
    from pathlib import Path
    from forgeline.core import hookimpl

    def _at(where):
        if os.environ.get("PAUSE_LOG"):
            with open(os.environ["PAUSE_LOG"], "a") as f:
                f.write(where + "\\n")
        if os.environ.get("PAUSE_AT") == where:
            Path(os.environ["PAUSE_FLAG"]).write_text(where)
            while True:
                time.sleep(1)

    @hookimpl
    def forgeline_stage_started(run, stage):
        _at(f"stage:{stage.section}")

    @hookimpl
    def forgeline_train_step_ended(run, step):
        _at(f"step:{step.step}")
    """)

RESUMABLE = textwrap.dedent("""\
    name: wine-resume
    seed: 0
    data: {source: wine}
    clean: [robust-scale, impute]
    features: [{use: cross, with: {max_crosses: 4}}]
    train: {model: {use: mlp, with: {hidden: [8]}}, epochs: 3, batch_size: 16, device: cpu,
            checkpoint: {every_steps: 1000}}
    """)


@pytest.fixture(scope="module")
def pause_site(tmp_path_factory) -> Path:
    """A site folder with the pause plugin as an installed distribution (its dist-info written by hand)."""
    site = tmp_path_factory.mktemp("pause-site")
    (site / "pause_at").mkdir()
    (site / "pause_at" / "__init__.py").write_text(PAUSE_PLUGIN)
    info = site / "pause_at-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pause-at\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[forgeline.plugins]\nhooks = pause_at\n")
    return site


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, pause_site) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    done = run_cli("run", str(_pipeline(tmp, RESUMABLE)), "--out", str(tmp / "runs"), "--quiet", site=pause_site)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp / "runs").iterdir()
    return run


def _kill_at(where: str, pipeline: Path, out: Path, site: Path) -> Path:
    """Start ``forgeline run``, SIGKILL it once it reaches ``where``; returns its run folder."""
    flag = out.parent / "paused"
    env = {**os.environ, "PYTHONPATH": str(site), "PAUSE_AT": where, "PAUSE_FLAG": str(flag)}
    proc = subprocess.Popen([sys.executable, str(FORGELINE), "run", str(pipeline), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and flag.exists(), err[-2000:]
    (run,) = out.iterdir()
    return run


def _steady(metrics: dict) -> dict:
    """The metrics that do not depend on the machine's speed."""
    return {k: v for k, v in metrics.items() if "latency" not in k and "throughput" not in k}


@pytest.mark.parametrize("where, finished", [("stage:features", ["data", "clean.0", "clean.1"]),
                                             ("step:3", ["data", "clean.0", "clean.1", "features.0"])])
def test_a_run_killed_before_its_first_checkpoint_resumes_from_its_last_finished_stage(
        tmp_path, pause_site, uninterrupted, where, finished):
    run = _kill_at(where, _pipeline(tmp_path, RESUMABLE), tmp_path / "runs", pause_site)
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"  # nothing could write more
    killed = read_manifest(run)  # the stage log keeps what finished
    assert [s["id"] for s in killed["stages"] if s["status"] == "succeeded"] == finished
    assert not list((run / "checkpoints").glob("*.pt"))
    new = load_wine(as_frame=True).frame.head(20)
    assert len(fl.open_run(run).apply(new).table) == 20  # the finished stages already apply to new data
    before = {s["id"]: s for s in killed["stages"]}
    state_files = {p: p.stat().st_mtime_ns for p in (run / "stages").rglob("state.json")}

    log = tmp_path / "started.log"
    done = run_cli("run", "--resume", str(run), "--quiet", site=pause_site, env={"PAUSE_LOG": str(log)})
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "succeeded" and [s["status"] for s in m["stages"]] == ["succeeded"] * 5
    for s in m["stages"]:  # finished stages were loaded, not run again: same record, marked restored
        if s["id"] in finished:
            assert "restored" in s and s["started"] == before[s["id"]]["started"], s["id"]
        else:
            assert "restored" not in s, s["id"]
    started = [line for line in log.read_text().split() if line.startswith("stage:")]
    assert started == [f"stage:{sid.split('.')[0]}" for sid in ["data", "clean.0", "clean.1", "features.0", "train"]
                       if sid not in finished]
    assert {p: p.stat().st_mtime_ns for p in state_files} == state_files  # fitted state untouched
    assert not (run / "stages" / "snapshot").exists()  # a finished run keeps no resume snapshot

    # the same model and metrics as the run nobody killed
    assert _steady(m["metrics"]) == _steady(json.loads((uninterrupted / "manifest.json").read_text())["metrics"])
    a, b = (torch.load(r / "model" / "weights.pt", weights_only=True) for r in (run, uninterrupted))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and its fitted stages (loaded, not refitted) transform new data as the uninterrupted run's do
    pd.testing.assert_frame_equal(fl.open_run(run).apply(new).table.frame,
                                  fl.open_run(uninterrupted).apply(new).table.frame)


@pytest.mark.parametrize("manifest, missing", [
    ({"name": "x", "status": "failed", "pipeline": {"resolved": {}}}, "pipeline.given"),
    ({"status": "failed"}, "name, pipeline, pipeline.given"),
    ({"hello": "world"}, "name, status, pipeline, pipeline.given"),
])
def test_resume_of_a_folder_without_a_forgeline_manifest_names_what_is_missing(tmp_path, run_forgeline,
                                                                              manifest, missing):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    done = run_forgeline("run", "--resume", str(tmp_path))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "manifest.json") in lines[0] and f"lacks {missing};" in lines[0]


# ------------------------------------------------------------- the stage record is append-only

def _counting_writes(monkeypatch) -> dict[str, list[int]]:
    """Bytes of every file the run folder writes atomically, by file name."""
    import forgeline.core.resume as resume
    import forgeline.core.runfolder as runfolder

    writes: dict[str, list[int]] = {}
    real = runfolder.write_atomic

    def counted(path, data):
        real(path, data)
        writes.setdefault(path.name, []).append(path.stat().st_size)

    monkeypatch.setattr(runfolder, "write_atomic", counted)
    monkeypatch.setattr(resume, "write_atomic", counted)
    return writes


def test_the_run_record_writes_the_same_bytes_per_stage_however_many_stages(tmp_path, monkeypatch):
    per_stage, manifest_writes = {}, {}
    for n in (10, 80):
        writes = _counting_writes(monkeypatch)
        run = fl.run({"name": f"many-{n}", "seed": 0, "data": {"source": "wine"}, "clean": ["robust-scale"] * n},
                     out=tmp_path / str(n))
        assert run.manifest["status"] == "succeeded" and len(run.manifest["stages"]) == n + 1
        log = (run.dir / "stages.jsonl").stat().st_size
        per_stage[n] = (sum(map(sum, writes.values())) + log) / (n + 1)
        manifest_writes[n] = len(writes["manifest.json"])
        written = json.loads((run.dir / "manifest.json").read_text())["stages"]
        assert read_stage_log(run.dir / "stages.jsonl") == written  # the log and the manifest agree
    assert manifest_writes == {10: 2, 80: 2}  # when the run starts and when it ends, not per stage
    assert per_stage[80] < 1.25 * per_stage[10], per_stage


def test_a_section_with_too_many_stages_is_refused_in_one_line(tmp_path, run_forgeline):
    pipeline = tmp_path / "p.json"
    pipeline.write_text(json.dumps({"name": "many", "data": {"source": "wine"}, "clean": ["robust-scale"] * 1001}))
    done = run_forgeline("validate", str(pipeline))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"{pipeline}:1: clean: 1,001 components; a section runs at most 1,000 stages "
                                   "(each has its own record, fitted state and resume snapshot)")


def test_a_run_folder_with_its_stages_in_the_manifest_only_still_opens_and_applies(tmp_path):
    """Run folders written before the stage log: ``open_run``/``apply``/``report`` read the manifest's stages."""
    run = fl.run({"name": "old", "seed": 0, "data": {"source": "wine"}, "clean": ["robust-scale"]}, out=tmp_path)
    (run.dir / "stages.jsonl").unlink()
    new = load_wine(as_frame=True).frame.head(10)
    pd.testing.assert_frame_equal(fl.open_run(run.dir).apply(new).table.frame, run.apply(new).table.frame)
    assert [s["id"] for s in read_manifest(run.dir)["stages"]] == ["data", "clean.0"]


def _failed_run(given, cat, stage_class, out, monkeypatch):
    """The run folder of ``given`` run until ``stage_class`` fails (with a RuntimeError)."""
    def boom(self, state, env):
        raise RuntimeError("the stage failed")

    monkeypatch.setattr(stage_class, "run", boom)
    with pytest.raises(Exception, match="the stage failed"):
        fl.run(given, out=out, catalog_=cat)
    monkeypatch.undo()
    (run,) = out.iterdir()
    return run


def test_a_failed_run_resumes_its_finished_stages_unless_the_pipeline_changed(tmp_path, monkeypatch, capsys):
    from forgeline.core.runner import Runner
    from forgeline.core.stages import FeaturesStage

    given = {"name": "fails", "seed": 0, "data": {"source": "wine"}, "clean": ["robust-scale"],
             "features": [{"use": "cross", "with": {"max_crosses": 2}}]}
    cat = fl.catalog()

    failed = _failed_run(given, cat, FeaturesStage, tmp_path / "runs", monkeypatch)
    again = shutil.copytree(failed, tmp_path / "again")

    Runner(fl.load(given, catalog_=cat), cat, resume=failed, quiet=True).run()
    m = json.loads((failed / "manifest.json").read_text())
    assert [("restored" in s, s["status"]) for s in m["stages"]] == [(True, "succeeded")] * 2 + [(False, "succeeded")]

    Runner(fl.load(given, ["clean.0.with.quantile_range=[10,90]"], catalog_=cat), cat, resume=again, quiet=True).run()
    assert "the pipeline differs" in capsys.readouterr().err
    m = json.loads((again / "manifest.json").read_text())
    assert m["status"] == "succeeded" and not any("restored" in s for s in m["stages"])


def test_a_run_failed_after_training_resumes_with_the_trained_model(tmp_path, monkeypatch):
    """The train stage is restored from ``model/weights.pt``: compress then sees the same model."""
    from forgeline.core.runner import Runner
    from forgeline.core.stages import CompressStage

    given = {"name": "c", "seed": 0, "data": {"source": "wine"}, "clean": ["robust-scale"],
             "train": {"model": {"use": "mlp", "with": {"hidden": [8]}}, "epochs": 2, "device": "cpu"},
             "compress": [{"use": "prune", "with": {"ratio": 0.5, "epochs": 0}}]}
    cat = fl.catalog()
    full = fl.run(given, out=tmp_path / "full", catalog_=cat)

    run = _failed_run(given, cat, CompressStage, tmp_path / "runs", monkeypatch)
    Runner(fl.load(given, catalog_=cat), cat, resume=run, quiet=True).run()
    m = json.loads((run / "manifest.json").read_text())
    assert [(s["id"], "restored" in s) for s in m["stages"]] == [("data", True), ("clean.0", True), ("train", True),
                                                                 ("compress", False)]
    assert m["status"] == "succeeded" and _steady(m["metrics"]) == _steady(full.manifest["metrics"])

    def scores(manifest):
        return [{k: v for k, v in row.items() if k not in ("latency_ms", "speed")}
                for row in manifest["stages"][-1]["report"]["table"]]
    assert scores(m) == scores(full.manifest)


def test_a_damaged_snapshot_or_stage_log_is_one_line_naming_the_file(tmp_path, monkeypatch, run_forgeline):
    from forgeline.core.stages import FeaturesStage

    given = {"name": "damaged", "seed": 0, "data": {"source": "wine"}, "clean": ["robust-scale"],
             "features": [{"use": "cross"}]}
    monkeypatch.setattr(FeaturesStage, "run", lambda self, state, env: 1 / 0)
    with pytest.raises(Exception, match="division by zero"):
        fl.run(given, out=tmp_path / "runs", catalog_=fl.catalog())
    (run,) = (tmp_path / "runs").iterdir()
    table = next((run / "stages" / "snapshot").glob("*/train.parquet"))
    table.write_bytes(b"PAR1 not really")
    done = run_forgeline("run", "--resume", str(run))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert str(run / "stages" / "snapshot.json") in done.stderr and "damaged resume snapshot" in done.stderr

    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["finished"]  # as a killed run leaves it: the stages are read from the log
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = (run / "stages.jsonl").read_text().splitlines()
    (run / "stages.jsonl").write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n")
    done = run_forgeline("run", "--resume", str(run))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{run / 'stages.jsonl'}:2: damaged stage log line" in done.stderr


def test_a_finished_study_is_not_run_again_on_resume(tmp_path, monkeypatch):
    """The tune stage is restored from its report's best values: training follows them."""
    from forgeline.core.runner import Runner
    from forgeline.core.stages import TrainStage

    given = {"name": "t", "seed": 0, "data": {"source": "wine"}, "clean": ["robust-scale"],
             "train": {"model": {"use": "mlp", "with": {"hidden": [8]}}, "epochs": 1, "device": "cpu"},
             "tune": {"use": "random", "with": {"trials": 2, "metric": "val_accuracy", "prune": False,
                                                "space": {"train.optimizer.lr": {"real": [1e-4, 1e-1]}}}}}
    cat = fl.catalog()
    full = fl.run(given, out=tmp_path / "full", catalog_=cat)
    monkeypatch.setattr(TrainStage, "run", lambda self, state, env: 1 / 0)
    with pytest.raises(Exception, match="division by zero"):
        fl.run(given, out=tmp_path / "runs", catalog_=cat)
    monkeypatch.undo()
    (run,) = (tmp_path / "runs").iterdir()
    study = (run / "tune" / "study.sqlite").stat().st_mtime_ns
    Runner(fl.load(given, catalog_=cat), cat, resume=run, quiet=True).run()
    m = json.loads((run / "manifest.json").read_text())
    assert [(s["id"], "restored" in s) for s in m["stages"]] == [("data", True), ("clean.0", True), ("tune", True),
                                                                 ("train", False)]
    assert (run / "tune" / "study.sqlite").stat().st_mtime_ns == study
    assert _steady(m["metrics"]) == _steady(full.manifest["metrics"])


def test_the_train_report_lists_each_checkpoint_once(tmp_path):
    """A step checkpoint rewritten at the epoch's end (every_steps: 1) is listed once."""
    given = {"name": "ckpt", "seed": 0, "data": {"source": "wine"},
             "train": {"model": {"use": "mlp", "with": {"hidden": [8]}}, "epochs": 2, "device": "cpu",
                       "checkpoint": {"every_steps": 1, "keep": 5}}}
    run = fl.run(given, out=tmp_path / "runs")
    listed = next(s for s in run.manifest["stages"] if s["id"] == "train")["report"]["checkpoints"]
    assert len(listed) == 5 and len(set(listed)) == len(listed), listed
