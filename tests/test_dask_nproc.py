"""Engine dask under ``forgeline run --nproc 2``: rank 0 cleans, each rank streams its own shard.

Real torchrun ranks on gloo, a threaded local Dask cluster (no worker processes to start),
a table of 3,000 rows in three partitions.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")

from conftest import pip_install_target, run_cli, write_distribution  # noqa: E402

PIPELINE = """\
name: shards
seed: 5
data:
  source: credit
  with: {{rows: 3000}}
  target: default
  engine: dask
  split: {{test: 0.2, validation: 0.1}}
  dask: {{processes: false, workers: 1, partitions: 3}}
clean:
  - use: {cleaner}
  - use: robust-scale
train:
  model: {{use: mlp, with: {{hidden: [16]}}}}
  epochs: 2
  batch_size: 64
  parallel: ddp
  loader: {{workers: {workers}}}
"""


def _run(tmp_path: Path, name: str, cleaner: str = "impute", workers: int = 0, site: Path | None = None):
    file = tmp_path / f"{name}.yaml"
    file.write_text(PIPELINE.format(cleaner=cleaner, workers=workers))
    return run_cli("run", str(file), "--nproc", "2", "--out", str(tmp_path / name), "--json", site=site,
                   timeout=240)


def _read_ids(run: Path, piece: dict) -> set[int]:
    """The row ids of a recorded piece, found in its file: a contiguous run of its row group."""
    ids = pd.read_parquet(run / "cleaned" / "train" / piece["file"], columns=[]).index.to_numpy()
    first, last = list(ids).index(piece["first_row_id"]), list(ids).index(piece["last_row_id"])
    assert last - first + 1 == piece["rows"], piece  # what the rank read is contiguous in the file
    return set(ids[first:last + 1].tolist())


def test_each_rank_streams_its_own_shard_of_the_cleaned_partitions(tmp_path: Path) -> None:
    r = _run(tmp_path, "a")
    assert r.returncode == 0, r.stderr[-3000:]
    run = Path(json.loads(r.stdout)["run"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["world_size"] == 2
    train = next(s for s in manifest["stages"] if s["id"] == "train")["report"]
    every = pd.read_parquet(run / "cleaned" / "train", columns=[]).index
    n = len(every)
    assert n == next(s for s in manifest["stages"] if s["id"] == "clean.1")["report"]["train"]["rows_out"]
    shards = train["shards"]
    assert [s["replica"] for s in shards] == [0, 1]
    read = [set().union(*(_read_ids(run, p) for p in s["pieces"])) for s in shards]
    per = math.ceil(n / 2)
    assert all(s["rows"] == per and s["split_rows"] == n for s in shards)  # about half each, never the table
    assert read[0] | read[1] == set(every.tolist())  # together: the whole cleaned training split
    assert read[0] & read[1] == set(every[:2 * per - n].tolist())  # apart from the wrap-around padding
    assert shards[0]["steps"] == shards[1]["steps"] == train["steps"] == 2 * math.ceil(per / 64)
    assert shards[0]["inputs_fitted_on_rows"] == shards[1]["inputs_fitted_on_rows"] == n
    metrics = manifest["metrics"]
    assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(metrics)
    assert all(math.isfinite(metrics[k]) for k in ("val_loss", "test_loss"))

    # the same seed, loader worker processes this time: the same batches, the same weights
    again = _run(tmp_path, "b", workers=1)
    assert again.returncode == 0, again.stderr[-3000:]
    other = Path(json.loads(again.stdout)["run"])
    first, second = (torch.load(d / "model" / "weights.pt", weights_only=True) for d in (run, other))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((other / "manifest.json").read_text())["metrics"]["test_loss"] == metrics["test_loss"]


BROKEN = '''
from forgeline.core import Cleaner, hookimpl


class Broken(Cleaner):
    """Fails on every partition."""

    name = "broken"
    partition_wise = True

    def fit(self, table, ctx=None):
        return self

    def apply(self, table, ctx=None):
        raise ValueError("boom: this cleaner fails on purpose")


@hookimpl
def forgeline_cleaners():
    return [Broken]
'''


def test_a_failing_clean_on_rank_0_ends_every_rank_promptly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip_install_target(site, write_distribution(tmp_path, "forgeline-broken", "0.1.0", "fl_broken", BROKEN))
    started = time.monotonic()
    r = _run(tmp_path, "broken", cleaner="broken", site=site)
    assert r.returncode != 0
    assert time.monotonic() - started < 60  # no rank left waiting for the cleaned partitions
    assert "error: stage 'clean.0' failed in 'broken' (from forgeline-broken): ValueError: boom" in r.stderr, r.stderr
    manifest = json.loads((Path(json.loads(r.stdout)["run"]) / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "boom" in manifest["error"]


def test_what_needs_the_whole_split_is_refused_under_nproc(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("name: p\ndata:\n  source: credit\n  with: {rows: 200}\n  engine: dask\n"
                    "train:\n  model: mlp\n  parallel: hybrid\n")
    r = run_cli("run", str(file), "--nproc", "2", "--set", "features=[{use: cross}]",
                "--out", str(tmp_path / "runs"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(": clean: " in ln and "add a clean stage" in ln for ln in lines), r.stderr
    assert any(": features: " in ln and "whole training split" in ln and "--nproc 1" in ln for ln in lines), r.stderr
    assert any("train.parallel" in ln and "use ddp or fsdp" in ln for ln in lines), r.stderr


def test_rank_0_tells_the_waiting_ranks_what_failed(monkeypatch) -> None:
    """The store mechanism itself (in one process, rank 0 hosting the store as without torchrun's agent)."""
    import socket

    from forgeline.core import DistInfo, InputError
    from forgeline.core.train import rendezvous

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.setattr(rendezvous, "_store", None)
    zero, one = DistInfo(rank=0, world_size=2), DistInfo(rank=1, world_size=2)
    rendezvous.tell_ranks_failed(one, ValueError("not rank 0: publishes nothing"))
    rendezvous.tell_ranks_failed(zero, ValueError("the cluster is gone"))
    with pytest.raises(RuntimeError, match="rank 0 failed preparing the data, so rank 1 stops: ValueError"):
        rendezvous.await_prepared(one)
    assert rendezvous.process_group_store() is not None  # the process group reuses rank 0's store
    rendezvous.publish(zero, rendezvous.PREPARED, {"error": "data.source: no such file", "input": True})
    with pytest.raises(InputError, match="no such file"):
        rendezvous.await_prepared(one)
    assert rendezvous.gather_on_main(one, "k", {"rows": 1}) is None
    assert rendezvous.gather_on_main(zero, "k", {"rows": 2}) == [{"rows": 2}, {"rows": 1}]


def test_shards_of_row_groups_cover_the_split_evenly_and_read_the_right_rows(tmp_path: Path) -> None:
    """Files of several row groups; more ranks than some files have rows; any order of positions."""
    import numpy as np

    from forgeline.core import Table
    from forgeline.core.data import ROW_ID
    from forgeline.core.train.batches import Request
    from forgeline.core.train.shards import ParquetSplit, ShardRows, ShardSource
    from forgeline.plugins.models.mlp import MLP

    ids = np.arange(0, 300, 3)  # 100 rows, ids with gaps, as a split's are
    frame = pd.DataFrame({"x": ids * 0.5, "y": ids % 2}, index=pd.Index(ids, name=ROW_ID))
    for i, chunk in enumerate(np.array_split(np.arange(100), 3)):
        frame.iloc[chunk].to_parquet(tmp_path / f"part-{i:05d}.parquet", row_group_size=10)
    split = ParquetSplit.open(tmp_path, Table.from_frame(frame.reset_index(drop=True), "y").schema)
    assert len(split) == 100 and len(split.groups) == 12
    pd.testing.assert_frame_equal(split.to_table().frame, frame)
    for ranks in (1, 3, 7, 150):
        per = math.ceil(100 / ranks)
        got = [np.concatenate([split.read([p]).row_ids for p in split.shard(r, ranks)]) for r in range(ranks)]
        assert all(len(g) == per for g in got)
        assert np.array_equal(np.concatenate(got), np.resize(ids, per * ranks))  # in order, padded from the start
    model = MLP()
    model.fit_inputs(split.to_table())
    rows = ShardRows(split, split.shard(1, 3), model, torch.arange(34), seed=0)
    source = ShardSource(rows, 0, 1, np.empty(0))
    order = source.order(2)
    assert sorted(order.tolist()) == list(range(34)) and np.array_equal(order, source.order(2))
    assert not np.array_equal(order, source.order(3))
    assert rows.rows(order).row_ids.tolist() == ids[34:68][order].tolist()  # across files and row groups
    batch = rows.__getitems__(Request(0, 0, order[:8]))
    assert batch["target"].tolist() == order[:8].tolist()
    assert torch.equal(batch["x"], model.inputs(Table(frame.iloc[34:68].iloc[order[:8]], split.schema)))
