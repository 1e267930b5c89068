"""Engine dask under ``--nproc``: rank 0 prepares the splits, every rank reads its cleaned partitions.

Rank 0 runs the data and clean stages on the Dask cluster, then publishes (``core.train.
rendezvous``) the schema, the task, the classes and the folders of the cleaned splits; the
other ranks skip those stages and wait for it. Every rank then holds the splits as
:class:`~forgeline.core.train.shards.ParquetSplit` (file footers only), and training reads
each rank's own shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import Schema
from ..partitioned import close_clients
from .base import RunState, Splits, StageEnv

FOLLOWER_REPORT = {"engine": "dask", "prepared_by": "rank 0"}


def follows_rank_zero(env: StageEnv) -> bool:
    """This process is a rank other than 0 of a run of several on engine dask."""
    return env.plan.pipeline.data.engine == "dask" and env.dist.world_size > 1 and not env.dist.is_main


def publish_cleaned(state: RunState, env: StageEnv) -> None:
    """On rank 0: the cleaned splits as Parquet splits, announced to the other ranks."""
    from ..train.rendezvous import PREPARED, publish
    from ..train.shards import ParquetSplit

    folders = {name: p.meta.get("folder") for name, p in state.splits.items()}
    if not all(folders.values()):  # validation refuses a run without clean stages under --nproc
        raise RuntimeError("engine dask under --nproc trains on the cleaned partitions; no clean stage wrote them")
    state.splits = Splits(**{name: ParquetSplit.open(Path(f), p.schema)
                             for (name, p), f in zip(state.splits.items(), folders.values())})
    publish(env.dist, PREPARED, {"schema": state.schema.to_dict(), "cleaned": state.splits.train.schema.to_dict(),
                                 "task": state.task, "classes": state.classes, "folders": folders})
    # training reads the files, not the cluster: a local cluster's memory goes back now (and a
    # rank leaves through os._exit, without the interpreter's exit handlers that would close it)
    close_clients()


def receive_cleaned(state: RunState, env: StageEnv) -> dict[str, Any]:
    """On the other ranks: wait for rank 0's cleaned splits and take them up."""
    from ..train.rendezvous import await_prepared
    from ..train.shards import ParquetSplit

    got = await_prepared(env.dist)
    cleaned = Schema.from_dict(got["cleaned"])
    state.schema, state.task, state.classes = Schema.from_dict(got["schema"]), got["task"], got["classes"]
    state.splits = Splits(**{name: ParquetSplit.open(Path(f), cleaned) for name, f in got["folders"].items()})
    return {**FOLLOWER_REPORT, "splits": {name: len(s) for name, s in state.splits.items()}}
