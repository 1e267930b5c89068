"""Checkpoints: atomic writes, keep-K, weights_only loading, and resume after SIGKILL that ends
with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from forgeline.core import InputError
from forgeline.core.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from forgeline.core.train.loop import fit
from test_train_loop import make_job

TESTS = Path(__file__).resolve().parent


def test_save_is_atomic_and_keeps_the_newest(tmp_path, monkeypatch):
    for step in (3, 6, 9, 12):
        save_checkpoint(tmp_path, {"w": torch.full((2,), float(step))}, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000009.pt", "step-000000012.pt"]
    assert latest_checkpoint(tmp_path).name == "step-000000012.pt"
    assert torch.equal(load_checkpoint(latest_checkpoint(tmp_path))["w"], torch.full((2,), 12.0))

    def dies_halfway(obj, f, *a, **kw):  # a crash while writing: half a file, then an error
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"w": torch.zeros(2)}, 15, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000009.pt", "step-000000012.pt"]
    # a stray temporary file (a writer killed mid-write) is never taken for a checkpoint
    (tmp_path / ".tmp-abc.pt").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-000000012.pt"
    assert latest_checkpoint(tmp_path / "missing") is None


class Payload:
    """Not a tensor: weights_only loading must refuse to unpickle it."""


def test_loading_is_weights_only(tmp_path):
    path = tmp_path / "step-000000001.pt"
    torch.save({"format": 1, "evil": Payload()}, path)
    with pytest.raises(InputError, match="not plain tensors .*Unsupported global") as e:
        load_checkpoint(path)
    assert "weights_only=False" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_resume_needs_the_same_batch_layout(tmp_path):
    job = make_job(n=32, epochs=1, batch_size=8, valid=False)
    job.checkpoint_dir = tmp_path
    fit(job)
    other = make_job(n=32, epochs=2, batch_size=4, valid=False)
    other.resume_from = latest_checkpoint(tmp_path)
    with pytest.raises(InputError, match="resume with the same batch_size"):
        fit(other)


SCRIPT = textwrap.dedent("""
    import sys, time
    import torch
    sys.path.insert(0, {tests!r})
    from forgeline.core import hookimpl
    from forgeline.core.train.checkpoint import latest_checkpoint
    from forgeline.core.train.loop import fit
    from forgeline.plugins.precision import FP16
    from test_train_loop import SoftMixup, make_job, manager

    mode, ckpt_dir, out = sys.argv[1:4]

    class Slow:
        @hookimpl
        def forgeline_train_step_ended(self, run, step):
            time.sleep(0.04)  # leaves time to kill the run between checkpoints

    torch.set_num_threads(1)
    job = make_job(n=200, epochs=3, batch_size=8, accumulate=3, seed=7, model_params={{"dropout": 0.2}},
                   precision=FP16(init_scale=1024, growth_interval=5),
                   optimizer={{"name": "adamw", "lr": 0.01}}, scheduler={{"name": "cosine", "warmup_steps": 3}},
                   checkpoint={{"every_steps": 4, "keep": 2}}, hooks=manager(Slow()).hook)
    job.augmenters = [SoftMixup()]
    job.checkpoint_dir = ckpt_dir
    if mode == "resume":
        job.resume_from = latest_checkpoint(ckpt_dir)
        print("resuming from", job.resume_from, flush=True)
    result = fit(job)
    torch.save({{"state": result.module.state_dict(), "steps": result.steps, "metrics": result.metrics,
                "skipped": result.report["skipped_steps"]}}, out)
""")


def _run(script: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    killed_dir, full_dir = tmp_path / "killed", tmp_path / "full"

    full = _run(script, "full", str(full_dir), str(tmp_path / "full.pt"))
    victim = _run(script, "kill", str(killed_dir), str(tmp_path / "killed.pt"))
    deadline = time.monotonic() + 120
    while latest_checkpoint(killed_dir) is None and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, victim.stdout.read()
    assert not (tmp_path / "killed.pt").exists()  # it really died before finishing
    at = load_checkpoint(latest_checkpoint(killed_dir))["position"]
    assert at["step"] < 27  # 3 epochs x ceil(25 micro-batches / 3)

    resumed = _run(script, "resume", str(killed_dir), str(tmp_path / "resumed.pt"))
    out_resumed, _ = resumed.communicate(timeout=300)
    out_full, _ = full.communicate(timeout=300)
    assert resumed.returncode == 0, out_resumed
    assert full.returncode == 0, out_full
    assert "resuming from" in out_resumed

    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a["steps"] == b["steps"] == 27
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name
    assert a["metrics"]["val_loss"] == b["metrics"]["val_loss"]
    assert a["skipped"] == b["skipped"]


def test_resume_accepts_a_run_folder_and_continues_to_the_same_weights(tmp_path):
    """In-process resume from the newest checkpoint of a run folder (mid-epoch, accumulate > 1)."""
    train = dict(n=80, epochs=2, batch_size=8, accumulate=3, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
                 checkpoint={"every_steps": 2, "keep": 1}, valid=False)
    full = fit(make_job(**train))
    first = make_job(**{**train, "epochs": 1})  # stops after epoch 0: a checkpoint at step 4
    first.checkpoint_dir = tmp_path / "checkpoints"
    fit(first)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-000000004.pt"]
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(InputError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "empty-run")
    rest = make_job(**train)
    rest.resume_from = tmp_path  # the run folder
    resumed = fit(rest)
    assert resumed.steps == full.steps == 8
    for a, b in zip(full.module.state_dict().values(), resumed.module.state_dict().values()):
        assert torch.equal(a, b)


def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, capsys):
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, {"w": torch.full((2,), float(step))}, step, keep=3)
    newest = tmp_path / "step-000000009.pt"
    newest.write_bytes(b"\x00garbage" * 10)
    assert torch.equal(load_checkpoint(tmp_path)["w"], torch.full((2,), 6.0))
    err = capsys.readouterr().err
    assert "step-000000009.pt is damaged" in err and "resuming from the previous checkpoint" in err
    assert "step-000000006.pt" in err
    for p in tmp_path.glob("step-*.pt"):
        p.write_bytes(p.read_bytes()[:40])  # truncated, all of them
    with pytest.raises(InputError, match="no usable checkpoint") as e:
        load_checkpoint(tmp_path)
    assert all(f"step-00000000{s}.pt" in str(e.value) for s in (3, 6, 9)) and "\n" not in str(e.value)


def test_resume_continues_from_the_last_good_checkpoint(tmp_path):
    job = make_job(n=32, epochs=2, batch_size=8, valid=False, checkpoint={"every_steps": 1, "keep": 3})
    job.checkpoint_dir = tmp_path
    full = fit(job)
    newest = latest_checkpoint(tmp_path)
    newest.write_bytes(newest.read_bytes()[:100])  # a kill while the disk lied about the flush
    again = make_job(n=32, epochs=2, batch_size=8, valid=False, checkpoint={"every_steps": 1, "keep": 3})
    again.checkpoint_dir, again.resume_from = tmp_path, tmp_path
    resumed = fit(again)
    for a, b in zip(full.module.parameters(), resumed.module.parameters()):
        assert torch.equal(a, b)


def test_partial_files_of_a_killed_writer_are_removed(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, 3, keep=2)
    partial = [tmp_path / ".step-000000006.pt.k2j_x9", tmp_path / ".weights.pt.a8b7c6"]
    for p in partial:
        p.write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("kept")
    assert latest_checkpoint(tmp_path).name == "step-000000003.pt"
    assert all(p.exists() for p in partial)  # looking is harmless: a live writer may be mid-write
    assert torch.equal(load_checkpoint(tmp_path)["w"], torch.zeros(2))  # resuming: the writer is gone
    assert not any(p.exists() for p in partial) and (tmp_path / "notes.txt").exists()
