"""Tuners, the study store and its resume, compressors' contracts and the compression table."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from conftest import assert_self_contained_report

from forgeline.plugins.compress.distill import distillation_loss
from forgeline.plugins.compress.prune import Prune, n_params, restore
from forgeline.plugins.compress.qat import QatInt8, int8_modules
from forgeline.plugins.tune import Bayes, Grid, Random

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipelines" / "tune-compress.yaml"
SPACE = {"train.optimizer.lr": {"real": [1e-4, 1e-1], "prior": "log-uniform"}, "train.batch_size": {"int": [8, 64]},
         "train.optimizer.name": {"categorical": ["adam", "sgd"]}}


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgeline.core.cli", *args], capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------- search space

def test_bad_spaces_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("""name: bad
data: {source: credit, with: {rows: 200}, target: default}
train: {model: mlp, epochs: 1}
tune:
  use: bayes
  with:
    space:
      train.optimizer.lrr: {real: [1.0e-5, 1.0e-2]}
      train.batch_size: {int: [10, 2]}
      train.optimizer.momentum: {real: [0.8, 0.99], prior: logarithmic}
      train.epochs: {real: [0.0, 1.0], prior: log-uniform}
""")
    r = cli("validate", str(bad))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert any("train.optimizer.lrr" in ln and "lr" in ln and ":8:" in ln for ln in lines), lines
    assert any("train.batch_size" in ln and "low must be below high" in ln for ln in lines), lines
    assert any("momentum" in ln and "prior" in ln and "log-uniform" in ln for ln in lines), lines
    assert any("train.epochs" in ln and "must be positive" in ln for ln in lines), lines


def test_tuners_draw_inside_the_space_and_continue_after_a_resume() -> None:
    for cls in (Bayes, Random, Grid):
        t = cls({"space": SPACE, "trials": 6, "metric": "val_auc", **({"initial_points": 2} if cls is Bayes else {})},
                seed=3)
        seen = []
        for i in range(4):
            (v,) = t.ask_batch(1)
            assert 1e-4 <= v["train.optimizer.lr"] <= 1e-1 and 8 <= v["train.batch_size"] <= 64
            assert isinstance(v["train.batch_size"], int) and v["train.optimizer.name"] in ("adam", "sgd")
            t.tell(v, float(i))
            seen.append(v)
        # a resumed tuner is re-told the finished trials and asks what the first would have asked next
        again = cls(t.params, seed=3)
        for v, (_, s) in zip(seen, t.told_):
            again.tell(v, s)
        if cls is not Bayes:
            assert again.ask() == t.ask()
        else:
            assert again.ask() not in seen
    assert Bayes({"space": SPACE, "metric": "val_loss"}).maximize is False
    assert len(Grid({"space": SPACE, "points": 3}).grid) == 3 * 3 * 2


def test_skopt_paths_that_work_and_those_that_do_not() -> None:
    """Notices when skopt's GBRT/dummy_minimize start to work on this scikit-learn, or GP/RF/ET break."""
    from skopt import Optimizer, dummy_minimize

    warnings.simplefilter("ignore")
    for est in ("GP", "RF", "ET"):
        o = Optimizer([(0.0, 1.0)], est, n_initial_points=2, random_state=0)
        for _ in range(4):
            x = o.ask()
            o.tell(x, x[0] ** 2)
    with pytest.raises(Exception):
        o = Optimizer([(0.0, 1.0)], "GBRT", n_initial_points=2, random_state=0)
        for _ in range(4):
            x = o.ask()
            o.tell(x, x[0] ** 2)
    with pytest.raises(Exception, match="__sklearn_tags__"):
        dummy_minimize(lambda x: x[0] ** 2, [(0.0, 1.0)], n_calls=3, random_state=0)


# --------------------------------------------------------------------------- study: kill and resume

STUDY = """name: study
seed: 1
data: {source: credit, with: {rows: 500}, target: default}
clean: [impute, robust-scale]
train: {model: {use: mlp, with: {hidden: [8]}}, epochs: 2, batch_size: 64, device: cpu}
tune:
  use: random
  with:
    trials: 10
    metric: val_auc
    prune: false
    space:
      train.optimizer.lr: {real: [1.0e-3, 1.0e-1], prior: log-uniform}
      train.batch_size: {int: [16, 128]}
"""


def _finished(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as c:
        try:
            return c.execute("SELECT number, params, score FROM trials WHERE status = 'finished' "
                             "ORDER BY number").fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # polled while the study was still creating its tables
                return []
            raise


def test_a_killed_study_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    pipe = tmp_path / "study.yaml"
    pipe.write_text(STUDY)
    proc = subprocess.Popen([sys.executable, "-m", "forgeline.core.cli", "run", str(pipe), "--out", str(tmp_path / "runs"),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    db = None
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("study-*/tune/study.sqlite"))
        if found and len(_finished(found[0])) >= 2:
            db = found[0]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert db is not None, "the study never finished two trials"
    before = _finished(db)
    assert len(before) < 10
    r = cli("run", "--resume", str(db.parents[1]), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    after = _finished(db)
    assert after[:len(before)] == before  # the finished trials stay as they were
    assert len(after) == 10
    with sqlite3.connect(db) as c:
        numbers = [n for (n,) in c.execute("SELECT number FROM trials")]
        epochs = c.execute("SELECT COUNT(*) FROM epochs WHERE trial IN (SELECT number FROM trials "
                           "WHERE status = 'finished')").fetchone()[0]
    assert len(numbers) == len(set(numbers)) and epochs == 10 * 2
    params = [p for _, p, _ in after]
    assert len(set(params)) == len(params)  # no finished trial ran twice
    manifest = json.loads((db.parents[1] / "manifest.json").read_text())
    tune = next(s for s in manifest["stages"] if s["id"] == "tune")
    assert tune["report"]["trials"] == 10 and Path(tune["report"]["plot"]).exists()


# --------------------------------------------------------------------------- compressors

def _cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _ctx(x, fits: list | None = None):
    import torch

    from forgeline.core import CompressContext, DataSpec

    y = torch.arange(len(x)) % 10

    def evaluate(m):
        with torch.no_grad():
            return {"val_accuracy": float((m(x).argmax(1) == y).float().mean())}

    def fit(m, epochs, loss=None):  # forward passes only: enough for QAT's observers to see the data
        if fits is not None:
            fits.append((epochs, loss))
        m.train()
        with torch.no_grad():
            for _ in range(epochs):
                m(x)
        return m

    return CompressContext(spec=DataSpec("classification", 10, tuple(x.shape[1:])), example_inputs=x[:4],
                           fit=fit, evaluate=evaluate, teacher=None, batches=lambda n: iter([(x, y)] * n))


def test_prune_removes_channels_and_the_pruned_weights_load_into_a_rebuilt_model() -> None:
    import torch

    x = torch.randn(16, 1, 8, 8)
    model, fits = _cnn(), []
    before = n_params(model)
    prune = Prune({"ratio": 0.5, "importance": "taylor", "epochs": 1})
    pruned = prune.compress(model, _ctx(x, fits))
    assert pruned[0].out_channels == 8 and pruned[3].in_channels == 8 and pruned[-1].out_features == 10
    assert n_params(pruned) < 0.45 * before and fits == [(1, None)]
    assert pruned(x).shape == (16, 10)
    state = json.loads(json.dumps({"shapes": prune.shapes_, "removed": prune.removed_}))  # plain data
    rebuilt = restore(_cnn(), state["shapes"], state["removed"])
    rebuilt.load_state_dict(pruned.state_dict())
    pruned.eval(), rebuilt.eval()
    assert torch.allclose(rebuilt(x), pruned(x))


def test_layer_pruning_removes_whole_blocks() -> None:
    import torch
    from torch import nn

    prune = Prune({"ratio": 0.5, "granularity": "layer", "epochs": 0})
    pruned = prune.compress(_cnn(), _ctx(torch.randn(16, 1, 8, 8)))
    assert prune.removed_ == ["3"] and isinstance(pruned[3], nn.Identity)  # the one 16 -> 16 conv


def test_qat_int8_runs_int8_kernels() -> None:
    import torch

    x = torch.randn(16, 1, 8, 8)
    model = _cnn().eval()
    q = QatInt8({"epochs": 1}).compress(model, _ctx(x))
    kinds = {type(m).__name__ for m in q.modules()}
    assert int8_modules(q) and {"ConvReLU2d", "Linear"} & kinds
    out = q(x)
    assert out.dtype == torch.float32 and out.shape == (16, 10)
    assert torch.corrcoef(torch.stack([out.flatten(), model(x).flatten()]))[0, 1] > 0.9


def test_distillation_loss_on_a_known_case() -> None:
    import math

    import torch

    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    # teacher/T=2: softmax (sqrt3, 1)/(sqrt3+1); student: (1/2, 1/2)
    p = torch.tensor([3 ** 0.5, 1.0]) / (3 ** 0.5 + 1)
    kl = float((p * (p / 0.5).log()).sum())
    expected = 0.7 * kl * 4 + 0.3 * math.log(2)
    assert float(distillation_loss(s, t, y, 0.7, 2.0)) == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(t, t, y, 1.0, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_the_table_is_measured(tmp_path: Path) -> None:
    """A compressor that makes the model slower shows up as a speed below 1x, with its real latency."""
    import torch
    from torch import nn

    from forgeline.core import Compressor
    from forgeline.core.compression import compress_model

    class Slow(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            time.sleep(0.02)
            return self.inner(x)

    class Slower(Compressor):
        name = "slower"

        def compress(self, model, ctx):
            return Slow(model)

    x = torch.randn(16, 1, 8, 8)
    result = compress_model(_cnn(), [("compress.0", Slower())], _ctx(x), latency_inputs=x, metric="val_accuracy",
                            export_path=tmp_path / "m.ts")
    rows = {r["version"]: r for r in result.table}
    assert rows["slower"]["latency_ms"] >= 20 and rows["slower"]["speed"] < 1
    assert rows["original"]["speed"] == 1 and rows["original"]["params"] == n_params(_cnn())
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    assert torch.allclose(loaded(x), result.model(x), atol=1e-5)


# --------------------------------------------------------------------------- end to end

def test_tune_then_compress_example_end_to_end(tmp_path: Path) -> None:
    sets = ["tune.with.trials=2", "tune.with.initial_points=2", "train.epochs=1",
            "train.model.with.channels=[8, 16]", "compress.2.with.epochs=1"]
    r = cli("run", str(EXAMPLE), "--out", str(tmp_path), "--json", *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 0, r.stderr[-3000:]
    run = next(tmp_path.glob("tune-compress-*"))
    assert "| qat-int8 |" in (run / "compress" / "table.md").read_text()
    table = json.loads((run / "compress" / "table.json").read_text())
    assert [t["version"] for t in table] == ["original", "prune", "qat-int8", "distill", "exported"]
    assert table[1]["params"] < table[0]["params"]
    assert (run / "tune" / "convergence.png").stat().st_size > 1000 and (run / "model" / "compressed.ts").exists()
    with sqlite3.connect(run / "tune" / "study.sqlite") as c:
        assert c.execute("SELECT COUNT(*) FROM trials WHERE status = 'finished'").fetchone()[0] == 2
    page = assert_self_contained_report(run)
    for section in ("tuning", "compression", "training"):
        assert f'<section id="{section}">' in page
