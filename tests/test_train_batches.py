"""Batches as named tensors: models with several inputs and their own loss, streamed data,
and gradient accumulation that weighs every row alike."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from forgeline.core import Augmenter, Model
from forgeline.core.data import Table
from forgeline.core.train.loop import fit

from conftest import pip_install_target, write_distribution
from test_train_loop import make_job, weights

#: a third-party model with two named inputs (numbers and hashed word ids) and its own loss
TWO_INPUT = '''
"""A model reading a numeric block and a token block, trained with a label-smoothed loss."""
import zlib

import numpy as np
from pydantic import Field

from forgeline.core import Model, Modality, Params, hookimpl

WORDS = 12


class TwoInput(Model):
    """Numbers and words: a linear block and a bag of word embeddings, then a head."""

    name = "two-input"

    class Params(Params):
        smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the loss")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_calls = 0

    def fit_inputs(self, table):
        self.numeric_ = table.schema.features(Modality.NUMERIC)
        self.text_ = table.schema.features(Modality.TEXT)[0]
        numbers = table.frame[self.numeric_].to_numpy(np.float32)
        self.mean_, self.std_ = np.nanmean(numbers, 0), np.nanstd(numbers, 0) + 1e-6

    def inputs(self, table):
        import torch

        numbers = table.frame[self.numeric_].to_numpy(np.float32)
        numbers = np.nan_to_num((numbers - self.mean_) / self.std_).astype(np.float32)
        tokens = np.zeros((len(table), WORDS), dtype=np.int64)
        for i, text in enumerate(table.frame[self.text_].fillna("").astype(str)):
            ids = [zlib.crc32(w.encode()) % 499 + 1 for w in text.lower().split()[:WORDS]]
            tokens[i, :len(ids)] = ids
        return {"numbers": torch.from_numpy(numbers), "tokens": torch.from_numpy(tokens)}

    def build(self, spec):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.numbers = nn.Linear(spec.input_shapes["numbers"][0], 16)
                self.words = nn.EmbeddingBag(500, 16, padding_idx=0)
                self.head = nn.Linear(32, spec.n_outputs)

            def forward(self, inputs):
                both = torch.cat([torch.relu(self.numbers(inputs["numbers"])), self.words(inputs["tokens"])], 1)
                return self.head(both)

        return Net()

    def loss(self, outputs, batch):
        import torch.nn.functional as F

        self.loss_calls += 1
        return F.cross_entropy(outputs, batch["target"], label_smoothing=self.params.smoothing)


@hookimpl
def forgeline_models():
    return [TwoInput]
'''


@pytest.fixture(scope="module")
def two_input_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-input")
    dist = write_distribution(root, "forgeline-two-input-demo", "0.1.0", "fl_two_input_demo", TWO_INPUT,
                              entry_point="models")
    site = root / "site"
    pip_install_target(site, dist)
    return site


def _credit_tables(n=240):
    rng = np.random.default_rng(0)
    words = np.array(["late", "paid", "ok", "risk", "new", "loyal", "missed", "fine"])
    frame = pd.DataFrame({"income": rng.normal(50, 10, n), "debt": rng.normal(10, 3, n),
                          "comment": [" ".join(rng.choice(words, 6)) for _ in range(n)]})
    frame["y"] = ((frame.debt / frame.income + 0.1 * frame.comment.str.count("late")) > 0.25).astype(int)
    table = Table.from_frame(frame, "y")
    return table.take(table.row_ids[:180]), table.take(table.row_ids[180:])


def test_a_model_with_named_inputs_owns_its_loss(two_input_site, monkeypatch):
    monkeypatch.syspath_prepend(str(two_input_site))
    from fl_two_input_demo import TwoInput

    train, valid = _credit_tables()
    job = make_job(epochs=3, batch_size=16, accumulate=2, optimizer={"name": "adam", "lr": 0.02})
    job.model, job.train, job.valid = TwoInput(), train, valid
    result = fit(job)
    micro = 3 * int(np.ceil(180 / 16))
    validation_batches = 3 * int(np.ceil(60 / 16))
    assert job.model.loss_calls == micro + validation_batches  # training and validation both use it
    assert result.report["history"][-1]["train_loss"] < result.report["history"][0]["train_loss"]
    assert result.metrics["val_accuracy"] > 0.6
    # label smoothing keeps the loss above its entropy floor: the model's loss, not the default one
    floor = -(0.95 * np.log(0.95) + 0.05 * np.log(0.05))
    assert result.metrics["val_loss"] > floor


def test_inputs_must_be_tensors_with_one_row_per_table_row():
    class Ragged(Model):
        name = "ragged"

        def inputs(self, table):
            return {"a": torch.zeros(len(table), 2), "b": torch.zeros(1, 2)}

        def build(self, spec):
            return torch.nn.Linear(2, 2)

    job = make_job(epochs=1)
    job.model = Ragged()
    with pytest.raises(TypeError, match="one row per table row"):
        fit(job)


@pytest.mark.slow
def test_two_inputs_and_own_loss_train_under_ddp_with_accumulation_and_resume_bit_exact(
        two_input_site, tmp_path, run_forgeline):
    pipeline = tmp_path / "two.yaml"
    pipeline.write_text(textwrap.dedent("""\
        name: two
        seed: 3
        data: {source: credit, with: {rows: 500}, target: default}
        train:
          model: two-input
          epochs: 2
          batch_size: 16
          accumulate: 2
          device: cpu
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          parallel: ddp
          checkpoint: {every_steps: 3, keep: 50}
        """))
    done = run_forgeline("run", str(pipeline), "--out", str(tmp_path / "runs"), "--nproc", "2", "--quiet",
                         site=two_input_site, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (full,) = (tmp_path / "runs").iterdir()
    report = _train_report(full)
    assert report["effective_batch"] == 64 and report["parallel"] == "ddp"
    checkpoints = sorted((full / "checkpoints").glob("step-*.pt"))
    assert len(checkpoints) > 3

    # resume a copy from a mid-epoch checkpoint: the same weights at the end, bit for bit
    copy = tmp_path / "copy"
    shutil.copytree(full, copy)
    for later in sorted((copy / "checkpoints").glob("step-*.pt"))[2:]:
        later.unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "status": "failed"}))  # as if it had crashed
    done = run_forgeline("run", "--resume", str(copy), "--nproc", "2", "--quiet",
                         site=two_input_site, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step-000000006.pt" in _train_report(copy)["resumed_from"]
    a = torch.load(full / "model" / "weights.pt", weights_only=True)
    b = torch.load(copy / "model" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _train_report(run):
    manifest = json.loads((run / "manifest.json").read_text())
    return next(s for s in manifest["stages"] if s["id"] == "train")["report"]


@pytest.mark.slow
def test_a_split_too_large_for_one_tensor_streams_through_two_workers_deterministically(tmp_path, run_forgeline):
    def run(name, workers):
        pipeline = tmp_path / f"{name}.yaml"
        pipeline.write_text(textwrap.dedent(f"""\
            name: {name}
            seed: 5
            data: {{source: shapes, with: {{rows: 400, size: 16}}}}
            train:
              model: {{use: cnn, with: {{channels: [8, 16]}}}}
              epochs: 2
              batch_size: 32
              device: cpu
              loader: {{workers: {workers}, max_tensor_mb: 0.1}}
            """))
        done = run_forgeline("run", str(pipeline), "--out", str(tmp_path / name), "--quiet",
                             env={"OMP_NUM_THREADS": "1"}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        (folder,) = (tmp_path / name).iterdir()
        return folder

    first, again, inline = run("first", 2), run("again", 2), run("inline", 0)
    report = _train_report(first)
    assert report["streamed"] is True and report["loader_workers"] == 2
    a = torch.load(first / "model" / "weights.pt", weights_only=True)
    for other in (again, inline):  # same seed: the same weights, whatever builds the batches
        b = torch.load(other / "model" / "weights.pt", weights_only=True)
        for name in a:
            assert torch.equal(a[name], b[name]), (other.name, name)


@pytest.mark.parametrize("batch_size, accumulate", [(32, 2), (16, 4), (8, 8), (4, 16)])
def test_every_split_of_the_same_effective_batch_gives_the_same_weights(batch_size, accumulate):
    """142 rows: each epoch ends with a window of 14 rows (e.g. micro-batches of 8 and 6),
    where each row must weigh 1/14, as in one batch of 64."""
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    large = fit(make_job(n=142, epochs=3, batch_size=64, accumulate=1, optimizer=sgd, valid=False))
    split = fit(make_job(n=142, epochs=3, batch_size=batch_size, accumulate=accumulate, optimizer=sgd, valid=False))
    assert split.steps == large.steps == 9
    for a, b in zip(weights(split.module), weights(large.module)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_accumulation_over_two_processes_equals_one_large_batch(tmp_path, run_forgeline):
    """wine: 142 training rows; 64 x 1 on one process, 32 x 1 and 8 x 4 on two, alike."""
    def run(name, batch_size, accumulate, nproc):
        pipeline = tmp_path / f"{name}.yaml"
        pipeline.write_text(textwrap.dedent(f"""\
            name: {name}
            seed: 1
            data: {{source: wine, split: {{test: 0.2}}}}
            clean: [robust-scale]
            train:
              model: {{use: mlp, with: {{hidden: [16]}}}}
              epochs: 3
              batch_size: {batch_size}
              accumulate: {accumulate}
              device: cpu
              optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}
              parallel: {'ddp' if nproc > 1 else 'single'}
            """))
        done = run_forgeline("run", str(pipeline), "--out", str(tmp_path / name), "--nproc", str(nproc), "--quiet",
                             env={"OMP_NUM_THREADS": "1"}, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        (folder,) = (tmp_path / name).iterdir()
        return torch.load(folder / "model" / "weights.pt", weights_only=True)

    large = run("large", 64, 1, 1)
    for other in (run("ddp", 32, 1, 2), run("ddp-accumulate", 8, 4, 2)):
        for name in large:
            torch.testing.assert_close(other[name], large[name], rtol=1e-5, atol=1e-6)


def test_threads_follow_the_setting_then_the_idle_cores(monkeypatch):
    import subprocess
    import sys

    from forgeline.core.train.threads import ThreadBudget, _cores

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert ThreadBudget(None).start() == 3 and torch.get_num_threads() == 3
    assert ThreadBudget(2).start() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(_cores()))
    assert ThreadBudget(None).start() == 1  # one core per rank when every core runs a rank
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(_cores())]
    try:
        import time

        time.sleep(0.5)
        assert ThreadBudget(None).start() == 1  # every core busy elsewhere: do not fight for them
    finally:
        for p in spin:
            p.kill()
        torch.set_num_threads(1)


class ShiftRows(Augmenter):
    """An online augmenter (test): adds noise drawn from the batch's RNG to every feature."""

    name = "shift-rows"

    @property
    def online(self):
        return True

    def transform_rows(self, table, rng):
        frame = table.frame.copy()
        columns = table.schema.features()
        frame[columns] = frame[columns] + rng.normal(scale=0.3, size=(len(frame), len(columns)))
        return table.with_frame(frame)


@pytest.mark.parametrize("workers", [0, 2])
def test_online_augmenters_see_fresh_rows_every_epoch_whatever_the_workers(workers):
    sgd = {"name": "sgd", "lr": 0.1}
    plain = fit(make_job(epochs=2, batch_size=16, optimizer=sgd, valid=False))
    job = make_job(epochs=2, batch_size=16, optimizer=sgd, valid=False, loader={"workers": workers})
    job.augmenters = [ShiftRows()]
    online = fit(job)
    again = make_job(epochs=2, batch_size=16, optimizer=sgd, valid=False, loader={"workers": 0})
    again.augmenters = [ShiftRows()]
    reference = fit(again)
    assert online.report["streamed"] and not plain.report["streamed"]
    for a, b, c in zip(weights(online.module), weights(reference.module), weights(plain.module)):
        assert torch.equal(a, b)  # the same rows whatever builds the batches
    assert not all(torch.equal(a, c) for a, c in zip(weights(online.module), weights(plain.module)))
