"""The training loop: metrics and records, accumulation equivalence, hooks, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pluggy
import pytest
import torch
from forgeline.core import (
    Augmenter,
    DistInfo,
    InputError,
    Model,
    ParallelStrategy,
    Params,
    PrecisionPolicy,
    RunInfo,
    hookimpl,
    hookspecs,
)
from forgeline.core.data import Table
from forgeline.core.pipeline import Train
from forgeline.core.train import TrainJob
from forgeline.core.train.loop import fit
from forgeline.plugins.precision import FP32
from pydantic import Field


class TinyMLP(Model):
    """A two-layer MLP over the numeric feature columns (test model)."""

    name = "tiny-mlp"

    class Params(Params):
        hidden: int = Field(16, description="hidden units")
        dropout: float = Field(0.0, description="dropout after the hidden layer")

    def inputs(self, table: Table) -> torch.Tensor:
        return torch.tensor(table.X.to_numpy(np.float32))

    def build(self, spec):
        h = self.params.hidden
        return torch.nn.Sequential(torch.nn.Linear(spec.input_shape[0], h), torch.nn.ReLU(),
                                   torch.nn.Dropout(self.params.dropout), torch.nn.Linear(h, spec.n_outputs))


def make_tables(n: int = 120, task: str = "classification", seed: int = 0, n_valid: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + n_valid, 4)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2]
    y = (score > 0).astype(int) if task == "classification" else score * 2.0 + 1.0
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(y=y)
    table = Table.from_frame(frame, target="y")
    return table.take(table.row_ids[:n]), table.take(table.row_ids[n:])


def make_job(task: str = "classification", n: int = 120, precision: PrecisionPolicy | None = None,
             hooks=None, log=None, valid: bool = True, seed: int = 0, model_params=None, **train) -> TrainJob:
    tr, va = make_tables(n, task, seed=seed)
    config = Train.model_validate({"model": "tiny-mlp", "device": "cpu", **train})
    return TrainJob(config=config, model=TinyMLP(model_params or {}), precision=precision or FP32(),
                    parallel=ParallelStrategy(), train=tr, valid=va if valid else None, task=task,
                    classes=[0, 1] if task == "classification" else [],
                    run=RunInfo(name="test", dir=None, seed=seed, pipeline={}), dist=DistInfo(), seed=seed,
                    log=log or (lambda r: None), hooks=hooks)


def manager(*plugins) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for p in plugins:
        pm.register(p)
    return pm


def weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_fit_learns_and_logs_steps_epochs_and_latency():
    records = []
    job = make_job(epochs=6, batch_size=16, log_every=2, optimizer={"name": "adam", "lr": 0.02}, log=records.append)
    result = fit(job)
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert result.steps == 6 * 8  # ceil(120 / 16) = 8 steps per epoch
    assert [r["step"] for r in steps] == list(range(2, 49, 2))
    assert {"loss", "lr", "grad_norm", "samples_per_s", "step_time_s"} <= set(steps[0])
    assert all(r["grad_norm"] > 0 and r["samples_per_s"] > 0 for r in steps)
    assert len(epochs) == 6 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert {"val_loss", "val_accuracy", "val_auc", "val_f1", "comm_share"} <= set(epochs[-1])
    assert result.metrics["val_accuracy"] > 0.85 and result.metrics["val_auc"] > 0.9
    assert result.metrics["latency_p95_ms"] >= result.metrics["latency_p50_ms"] > 0
    assert result.metrics["throughput_samples_per_s"] > 0
    assert isinstance(result.module, torch.nn.Sequential)
    assert result.report["effective_batch"] == 16 and result.report["history"][-1]["epoch"] == 5


def test_regression_metrics():
    result = fit(make_job("regression", epochs=20, batch_size=16, optimizer={"name": "adam", "lr": 0.02}))
    assert set(result.metrics) >= {"val_loss", "val_rmse", "val_mae", "val_r2"}
    assert result.metrics["val_r2"] > 0.8
    assert result.metrics["val_rmse"] == pytest.approx(result.metrics["val_loss"] ** 0.5, rel=1e-4)


@pytest.mark.parametrize("n", [96, 88])  # 88: the last window holds 3 micro-batches, not 4
def test_accumulation_equals_one_larger_batch(n):
    """k micro-batches of b step exactly like one batch of k*b, including a shorter last window."""
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    small = fit(make_job(n=n, epochs=2, batch_size=8, accumulate=4, optimizer=sgd, valid=False))
    large = fit(make_job(n=n, epochs=2, batch_size=32, accumulate=1, optimizer=sgd, valid=False))
    assert small.steps == large.steps == 2 * 3
    for a, b in zip(weights(small.module), weights(large.module)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # not a test that cannot fail: without accumulation the same micro-batches diverge
    plain = fit(make_job(n=n, epochs=2, batch_size=8, accumulate=1, optimizer=sgd, valid=False))
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(weights(plain.module), weights(large.module)))


class RecordingDDP(ParallelStrategy):
    """Single-process strategy that records which micro-batches ran inside ``no_sync``."""

    name = "recording"

    def setup(self, dist):
        super().setup(dist)
        self.no_sync_calls = 0

    def no_sync(self, model):
        self.no_sync_calls += 1
        return super().no_sync(model)


def test_no_sync_on_all_but_the_last_micro_batch_of_each_window():
    job = make_job(n=88, epochs=1, batch_size=8, accumulate=4, valid=False)
    job.parallel = RecordingDDP()
    fit(job)
    # 11 micro-batches in windows of 4, 4, 3: 3 + 3 + 2 run without gradient sync
    assert job.parallel.no_sync_calls == 8


class StepCounter:
    def __init__(self):
        self.steps, self.epochs, self.checkpoints = [], [], []

    @hookimpl
    def forgeline_train_step_ended(self, run, step):
        self.steps.append(step)

    @hookimpl
    def forgeline_epoch_ended(self, run, epoch, metrics):
        self.epochs.append((epoch, dict(metrics)))

    @hookimpl
    def forgeline_checkpoint_saved(self, run, path, step):
        self.checkpoints.append((path, step))


def test_lifecycle_hooks_receive_steps_epochs_and_checkpoints(tmp_path):
    counter = StepCounter()
    job = make_job(n=64, epochs=2, batch_size=16, accumulate=2, hooks=manager(counter).hook,
                   checkpoint={"every_steps": 3, "keep": 5})
    job.checkpoint_dir = tmp_path
    fit(job)
    assert [s.step for s in counter.steps] == [1, 2, 3, 4]
    assert [s.epoch for s in counter.steps] == [0, 0, 1, 1]
    assert all(s.stepped and np.isfinite(s.loss) for s in counter.steps)
    assert [e for e, _ in counter.epochs] == [0, 1] and "val_auc" in counter.epochs[0][1]
    assert [s for _, s in counter.checkpoints] == [2, 3, 4]  # epoch 0 end, every 3 steps, epoch 1 end
    assert all(p.exists() for p, _ in counter.checkpoints)


class SoftMixup(Augmenter):
    """MixUp of each batch with its reverse (test augmenter): soft N x C targets."""

    name = "soft-mixup"
    per_sample, per_batch = False, True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    def augment_batch(self, batch, generator, spec):
        self.calls += 1
        lam = torch.rand((), generator=generator)
        inputs, onehot = batch["x"], torch.nn.functional.one_hot(batch["target"], spec.n_outputs).float()
        return {"x": lam * inputs + (1 - lam) * inputs.flip(0), "target": lam * onehot + (1 - lam) * onehot.flip(0)}


def test_batch_augmenters_mix_every_training_micro_batch_with_soft_targets():
    job = make_job(epochs=3, batch_size=16, optimizer={"name": "adam", "lr": 0.02})
    job.batch_augmenters = [SoftMixup()]
    result = fit(job)
    assert job.batch_augmenters[0].calls == 3 * 8
    assert result.metrics["val_accuracy"] > 0.7


class NeverHere(PrecisionPolicy):
    """A policy no device supports (test)."""

    name = "never-here"

    def unsupported(self, device):
        return f"not on {device.type}"


def test_bad_input_is_an_input_error():
    with pytest.raises(InputError, match="train.precision: never-here: not on cpu"):
        fit(make_job(precision=NeverHere()))
    job = make_job()
    job.classes = [0]  # the data holds class 1 too
    with pytest.raises(InputError, match="not among the training classes"):
        fit(job)
    with pytest.raises(InputError, match="linear-warmup needs warmup_steps"):
        fit(make_job(scheduler={"name": "linear-warmup"}))


class PinnedElsewhere(ParallelStrategy):
    """A strategy that insists on its own device (test)."""

    name = "pinned-elsewhere"

    def setup(self, dist):
        super().setup(dist)
        self.dist = DistInfo(device=torch.device("meta"))
        self.torn_down = False

    def teardown(self):
        self.torn_down = True


def test_train_device_and_strategy_device_must_agree():
    job = make_job(epochs=1)
    job.parallel = PinnedElsewhere()
    with pytest.raises(InputError, match="train.device is 'cpu' but parallel strategy 'pinned-elsewhere' runs on meta"):
        fit(job)
    assert job.parallel.torn_down  # joined, then left cleanly


def test_real_single_strategy_trains_on_cpu():
    single = pytest.importorskip("forgeline.plugins.parallel").Single
    job = make_job(epochs=2, batch_size=16, optimizer={"name": "adam", "lr": 0.02})
    job.parallel = single(device="cpu")
    assert fit(job).metrics["val_accuracy"] > 0.8
