"""Rank 0 prepares the data, the other ranks wait: a key-value store shared by the ranks.

Under ``forgeline run --nproc N`` with ``data.engine: dask`` the data and clean stages run
once, on rank 0, before training's process group exists. The ranks meet in the TCPStore
torchrun gives its workers (``MASTER_ADDR``/``MASTER_PORT``; torchrun's agent hosts it when
``TORCHELASTIC_USE_AGENT_STORE=True``, else rank 0 hosts it and the process group is later
built on the same store, :func:`process_group_store`), under keys of their own. Rank 0
publishes what the others need (schema, task, classes, the cleaned split folders) or, when
its run fails first, its error (``Runner.run`` calls :func:`tell_ranks_failed`); the others
poll for it, so a failure on rank 0 ends them within a poll. After
training each rank publishes what it read, and rank 0 gathers it for the train report.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import ForgelineError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from ..components import DistInfo

_PREFIX = "forgeline/"
_POLL_S = 0.2
_store: Any = None
_hosted = False  # this process hosts the store (no agent store): the process group reuses it

PREPARED = "prepared"


def world_store(dist: DistInfo) -> Any:
    """The store every rank of this torchrun world reaches (made once per process)."""
    global _store, _hosted
    if _store is None:
        from datetime import timedelta

        import torch.distributed as tdist

        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not host or not port:
            raise RuntimeError(f"rank {dist.rank} of {dist.world_size} has no MASTER_ADDR/MASTER_PORT: "
                               "start the ranks with `forgeline run --nproc N` (torchrun)")
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        _hosted = not agent
        _store = tdist.TCPStore(host, int(port), dist.world_size, is_master=_hosted and dist.rank == 0,
                                timeout=timedelta(minutes=5), wait_for_workers=False)
    return _store


def process_group_store() -> Any:
    """The store the process group must be built on when this world's ranks host their own
    (rank 0 holds MASTER_PORT already), else None (torchrun's ``env://`` as usual)."""
    if _store is None or not _hosted:
        return None
    import torch.distributed as tdist

    return tdist.PrefixStore("process_group", _store)


def publish(dist: DistInfo, key: str, value: Any) -> None:
    """Set ``key`` to ``value`` (JSON) for the other ranks."""
    world_store(dist).set(_PREFIX + key, json.dumps(value))


def wait_for(dist: DistInfo, key: str, what: str) -> Any:
    """The value another rank published under ``key``, polled until it is there."""
    store, full = world_store(dist), _PREFIX + key
    while True:
        try:
            if store.check([full]):
                return json.loads(store.get(full))
        except RuntimeError as e:  # the store went away: its host ended
            raise RuntimeError(f"rank {dist.rank} lost the ranks' store while waiting for {what} ({e}); "
                               "see rank 0's error") from None
        time.sleep(_POLL_S)


def tell_ranks_failed(dist: DistInfo, error: BaseException) -> None:
    """On rank 0 of several: publish ``error`` as the data stages' failure, for the ranks that
    may still wait for them (never raises: the run's own error stays the one reported)."""
    if dist.world_size == 1 or not dist.is_main:
        return
    text = str(error) if isinstance(error, ForgelineError) else f"{type(error).__name__}: {error}"
    try:
        publish(dist, PREPARED, {"error": text or type(error).__name__, "input": isinstance(error, InputError)})
    except Exception:  # noqa: BLE001 - no store to tell: torchrun still stops the ranks
        pass


def await_prepared(dist: DistInfo) -> dict[str, Any]:
    """What rank 0 published once its data stages finished; its error raised here if they failed."""
    got = wait_for(dist, PREPARED, "rank 0's data stages")
    if "error" in got:
        message = f"rank 0 failed preparing the data, so rank {dist.rank} stops: {got['error']}"
        raise InputError(message) if got["input"] else RuntimeError(message)
    return got


def gather_on_main(dist: DistInfo, key: str, record: Any) -> list[Any] | None:
    """Every rank's ``record``, in rank order, on rank 0 (None on the others)."""
    publish(dist, f"{key}/{dist.rank}", record)
    if not dist.is_main:
        return None
    return [wait_for(dist, f"{key}/{r}", f"rank {r}'s {key}") for r in range(dist.world_size)]
