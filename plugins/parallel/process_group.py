"""Process-group plumbing shared by the multi-process strategies.

Joining and leaving the ``torch.distributed`` world, the device of this rank, the
DistributedSampler-style split of an epoch, the mean of metrics over ranks, and the clock
that measures the share of step time spent in gradient communication.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from forgeline.core import DistInfo, InputError, ParallelStrategy

if TYPE_CHECKING:  # pragma: no cover
    import torch


def rank_device(dist: DistInfo) -> torch.device:
    """The device this rank computes on: ``dist.device`` when given, else its local GPU, else CPU."""
    import torch

    if dist.device is not None:
        return torch.device(dist.device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """gloo for CPU tensors, NCCL for CUDA tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


def world_problem(strategy: str, dist: DistInfo, min_world_size: int) -> str | None:
    """Why a multi-process strategy cannot run in this world, or None."""
    import torch.distributed

    if not torch.distributed.is_available():
        return f"parallel strategy {strategy!r} needs torch.distributed, which this torch build lacks; use 'single'"
    if dist.world_size < min_world_size:
        return (f"parallel strategy {strategy!r} needs at least {min_world_size} processes, the run has "
                f"{dist.world_size}: start it with `forgeline run --nproc {min_world_size}` (or more)")
    device = rank_device(dist)
    if device.type == "cuda" and not torch.distributed.is_nccl_available():
        return (f"parallel strategy {strategy!r} on CUDA needs NCCL, which this torch build lacks; "
                "run on CPU (gloo) or install a CUDA build of torch with NCCL")
    if device.type not in ("cpu", "cuda"):
        return f"parallel strategy {strategy!r} runs on CPU (gloo) or CUDA (NCCL), not on {device.type!r}"
    return None


def join_world(dist: DistInfo, device: torch.device) -> bool:
    """Join the default process group unless one exists; True when this call created it.

    Ranks started by torchrun find MASTER_ADDR/MASTER_PORT in their environment. A world of
    one without them (``forgeline run`` without ``--nproc``) gets an in-memory store, so DDP
    and FSDP2 also run on a single process.
    """
    import torch
    import torch.distributed as tdist

    if tdist.is_initialized():
        if tdist.get_world_size() != dist.world_size or tdist.get_rank() != dist.rank:
            raise RuntimeError(f"the process group already joined is rank {tdist.get_rank()} of "
                               f"{tdist.get_world_size()}, but this run is rank {dist.rank} of {dist.world_size}")
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    from forgeline.core.train.rendezvous import process_group_store

    backend = backend_for(device)
    store = process_group_store()  # the ranks' own store, when rank 0 already hosts it on MASTER_PORT
    if dist.world_size == 1 and "MASTER_ADDR" not in os.environ:
        tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1)
    elif store is not None:
        tdist.init_process_group(backend, store=store, rank=dist.rank, world_size=dist.world_size)
    else:
        tdist.init_process_group(backend, rank=dist.rank, world_size=dist.world_size)
    return True


def leave_world(owned: bool) -> None:
    """Destroy the default process group if :func:`join_world` created it."""
    import torch.distributed as tdist

    if owned and tdist.is_initialized():
        # every rank finishes its last collectives before the group goes: destroying it under
        # a peer's pending work aborts that peer
        tdist.barrier()
        tdist.destroy_process_group()


def epoch_positions(n_samples: int, epoch: int, seed: int, shuffle: bool, rank: int, replicas: int) -> np.ndarray:
    """This replica's sample positions for ``epoch``, the same count on every replica.

    Mirrors ``torch.utils.data.DistributedSampler`` (shuffle with ``seed + epoch``, pad by
    repeating the order from its start, then take every ``replicas``-th position) on numpy,
    so the loop gets positions without building a torch Dataset.
    """
    if n_samples <= 0:
        return np.empty(0, dtype=np.int64)
    order = np.random.default_rng(seed + epoch).permutation(n_samples) if shuffle else np.arange(n_samples)
    per_replica = -(-n_samples // replicas)
    order = np.resize(order, per_replica * replicas)  # np.resize repeats from the start: the padding
    return order[rank::replicas].astype(np.int64, copy=False)


def mean_over_ranks(metrics: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Mean of each metric over all ranks (one all-reduce); every rank must pass the same keys."""
    import torch
    import torch.distributed as tdist

    if not tdist.is_initialized() or tdist.get_world_size() == 1 or not metrics:
        return {k: float(v) for k, v in metrics.items()}
    keys = sorted(metrics)
    # float64 on CPU for gloo; NCCL reduces only device tensors (and float64 works on both)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                          device=device if backend_for(device) == "nccl" else "cpu")
    tdist.all_reduce(values, op=tdist.ReduceOp.SUM)
    values /= tdist.get_world_size()
    return dict(zip(keys, values.tolist()))


class CommClock:
    """Measures the share of training time during which gradient communication is in flight.

    * Communication: each gradient bucket's time from the comm hook's call to the completion
      of the future it returns (:meth:`timed_hook` wraps the hook). Buckets overlap each other
      and the backward pass, so the *union* of these intervals is counted, never their sum.
    * Training time: a clock started by the first training forward (module in training mode,
      grad enabled) and paused by an evaluation forward, so validation between steps is not
      counted; it includes forward, backward, optimizer step and data loading of the steps.

    ``share()`` returns communication / training time since the previous call and starts a
    new window. On CUDA the completion is seen from the host (NCCL's future), so it times
    the collective as the host waits for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hook_calls = 0  # buckets communicated since construction (tests count skipped syncs)
        self._intervals: list[tuple[float, float]] = []
        self._trained = 0.0
        self._running_since: float | None = None

    def timed_hook(self, hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """The DDP comm hook ``hook`` with each bucket's communication timed."""
        # no annotations: DDP rejects a hook whose annotations are not GradBucket/Future[Tensor]
        def timed(state, bucket):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            with self._lock:
                self.hook_calls += 1

            def record(fut: Any) -> Any:
                with self._lock:
                    self._intervals.append((start, time.perf_counter()))
                return fut.value()

            return hook(state, bucket).then(record)

        timed.__name__ = f"timed_{getattr(hook, '__name__', 'hook')}"
        return timed

    def forward_pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        """Starts the training clock on a training forward; pauses it on an evaluation forward."""
        import torch

        now = time.perf_counter()
        training = module.training and torch.is_grad_enabled()
        with self._lock:
            if training and self._running_since is None:
                self._running_since = now
            elif not training and self._running_since is not None:
                self._trained += now - self._running_since
                self._running_since = None

    def share(self) -> float | None:
        """Communication share of training time since the last call (None: no training since)."""
        now = time.perf_counter()
        with self._lock:
            trained = self._trained + (now - self._running_since if self._running_since is not None else 0.0)
            intervals, self._intervals = sorted(self._intervals), []
            self._trained = 0.0
            if self._running_since is not None:
                self._running_since = now
        if trained <= 0.0:
            return None
        busy, end = 0.0, float("-inf")
        for start, stop in intervals:  # union length of the (sorted) in-flight intervals
            if stop > end:
                busy += stop - max(start, end)
                end = stop
        return min(busy / trained, 1.0)


class DistributedStrategy(ParallelStrategy):
    """Base of the multi-process strategies: joins the world, splits epochs, reduces metrics.

    After ``setup``, ``self.device`` is this rank's device and ``self.dist.device`` carries it
    to the training loop.
    """

    min_world_size: ClassVar[int] = 1

    def unsupported(self, dist: DistInfo) -> str | None:
        return world_problem(self.name, dist, self.min_world_size)

    def setup(self, dist: DistInfo) -> None:
        problem = self.unsupported(dist)
        if problem:
            raise InputError(problem)
        self.device = rank_device(dist)
        self.dist = replace(dist, device=self.device)
        self._owns_world = join_world(self.dist, self.device)

    def data_replica(self) -> tuple[int, int]:
        """(index, count) of the data-parallel replica this rank belongs to."""
        return self.dist.rank, self.dist.world_size

    def shard(self, n_samples: int, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
        rank, replicas = self.data_replica()
        return epoch_positions(n_samples, epoch, seed, shuffle, rank, replicas)

    def reduce(self, metrics: Mapping[str, float]) -> dict[str, float]:
        return mean_over_ranks(metrics, self.device)

    def no_sync(self, model: torch.nn.Module) -> AbstractContextManager:
        import contextlib
        return contextlib.nullcontext()

    def teardown(self) -> None:
        leave_world(getattr(self, "_owns_world", False))
        self._owns_world = False
