"""Batches: tables become mappings of named tensors, held in memory or streamed.

A batch is ``dict[str, torch.Tensor]``: the model's inputs under their names (a model whose
``inputs`` returns one tensor gets it as ``"x"``) and the target under ``"target"``.

Two sources feed the loop the same batches:

* :class:`TensorSource` encodes a whole split once and slices it per batch: no per-step
  Python work beyond indexing, which is what a hand-written loop does.
* :class:`StreamSource` encodes each batch from the table's rows when it is needed, in a
  ``torch.utils.data.DataLoader`` with worker processes. It is used when the encoded split
  would exceed ``train.loader.max_tensor_mb``, when workers are asked for, or when an
  online augmenter must see fresh rows every epoch. Each batch is built from its own
  positions and an RNG seeded by (seed, epoch, batch number), so the output does not depend
  on how many workers build it or in which order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from ..components import Augmenter, Model
from ..data import Table
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..pipeline import Loader

Batch = dict[str, "torch.Tensor"]
TARGET = "target"
SINGLE_INPUT = "x"
_SAMPLE_ROWS = 64  # rows encoded to estimate a split's size in memory


def encode_targets(table: Table, task: str, classes: list[Any], split: str) -> torch.Tensor:
    """Class indices (int64, by position in ``classes``) or float32 regression targets."""
    import pandas as pd
    import torch

    y = table.y
    if y is None:
        raise InputError(f"train: the {split} split has no target column; set data.target")
    if y.isna().any():
        raise InputError(f"train: target column {y.name!r} has {int(y.isna().sum())} missing values in the "
                         f"{split} split; add a cleaner (e.g. drop or impute) before training")
    if task == "classification":
        codes = y.map({c: i for i, c in enumerate(classes)})
        if codes.isna().any():
            unknown = sorted(map(str, y[codes.isna()].unique()))[:5]
            raise InputError(f"train: target column {y.name!r} in the {split} split has values {unknown} "
                             f"that are not among the training classes {list(map(str, classes))[:10]}")
        return torch.from_numpy(codes.to_numpy(np.int64, copy=True))
    if not pd.api.types.is_numeric_dtype(y):
        raise InputError(f"train: regression target {y.name!r} has dtype {y.dtype} in the {split} split; "
                         "it must be numeric (or set the task to classification)")
    return torch.from_numpy(y.to_numpy(np.float32, copy=True))


def model_inputs(model: Model, table: Table, split: str) -> Batch:
    """``model.inputs(table)`` as named tensors, each with one row per table row."""
    import torch

    got = model.inputs(table)
    named = {SINGLE_INPUT: got} if isinstance(got, torch.Tensor) else dict(got) if isinstance(got, Mapping) else None
    if not named or not all(isinstance(v, torch.Tensor) and len(v) == len(table) for v in named.values()):
        what = type(got).__name__ if named is None else {k: f"{type(v).__name__} of {len(v) if hasattr(v, '__len__') else '?'} rows"
                                                          for k, v in named.items()}
        raise TypeError(f"model {model.name!r}: inputs() must return a tensor, or a mapping of named tensors, "
                        f"with one row per table row ({len(table)} for the {split} split); got {what}")
    if TARGET in named:
        raise TypeError(f"model {model.name!r}: inputs() may not name an input {TARGET!r} (the loop's key for targets)")
    return named


class Request(NamedTuple):
    """One batch to build: its epoch, its number within the epoch and the table positions."""

    epoch: int
    number: int
    positions: np.ndarray


class TableRows:
    """A map-style dataset over a table that builds whole batches (``__getitems__``).

    It holds the table, the model (its fitted encodings) and the encoded targets; worker
    processes receive a copy once and then only positions.
    """

    def __init__(self, table: Table, model: Model, targets: torch.Tensor, seed: int,
                 online: Sequence[Augmenter] = ()) -> None:
        self.table, self.model, self.targets, self.seed, self.online = table, model, targets, seed, tuple(online)

    def __len__(self) -> int:
        return len(self.table)

    def __getitems__(self, request: Request) -> Batch:
        import torch

        return table_batch(self.model, self.table.take_positions(request.positions),
                           self.targets[torch.from_numpy(request.positions)], request, self.seed, self.online)


def table_batch(model: Model, rows: Table, targets: torch.Tensor, request: Request, seed: int,
                online: Sequence[Augmenter]) -> Batch:
    """One training batch from its rows: online augmenters (an RNG seeded by seed, epoch and
    batch number), the model's inputs, the targets."""
    if online:
        rng = np.random.default_rng([seed, request.epoch, request.number])
        for aug in online:
            rows = aug.transform_rows(rows, rng)
    batch = model_inputs(model, rows, "train")
    batch[TARGET] = targets
    return batch


def _first(batch: list[Batch] | Batch) -> Batch:
    return batch  # __getitems__ already built the batch: nothing to collate


class TensorSource:
    """A split encoded once; batches are slices of its tensors."""

    streaming = False
    sharded = False  # the strategy shards its positions (a ShardSource holds one rank's rows only)

    def __init__(self, inputs: Batch, targets: torch.Tensor) -> None:
        self.tensors = {**inputs, TARGET: targets}
        self.rows = len(targets)

    def to(self, device: torch.device) -> TensorSource:
        """Keep the tensors on the device when they take under a quarter of its free memory,
        else pin them so host-to-device copies run asynchronously (CUDA only)."""
        import torch

        if device.type != "cuda":
            return self
        free, _ = torch.cuda.mem_get_info(device)
        fits = sum(t.nbytes for t in self.tensors.values()) <= free // 4
        self.tensors = {k: t.to(device) if fits else t.pin_memory() for k, t in self.tensors.items()}
        return self

    @property
    def device(self) -> torch.device:
        """Where the batches are: the device when the split was moved there, else the CPU."""
        return next(iter(self.tensors.values())).device

    def epoch(self, order: np.ndarray, batch_size: int, epoch: int, first: int = 0) -> Iterator[Batch]:
        import torch

        order_t = torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64)).to(self.device)
        for start in range(first * batch_size, len(order), batch_size):
            idx = order_t[start:start + batch_size]
            yield {k: t[idx] for k, t in self.tensors.items()}

    def sample(self, rows: int) -> Batch:
        return {k: t[:rows] for k, t in self.tensors.items()}


class StreamSource:
    """A split read batch by batch from its table through a ``DataLoader``."""

    streaming = True
    sharded = False

    def __init__(self, rows: TableRows, workers: int, pin: bool = False) -> None:
        self.dataset, self.workers, self.pin = rows, workers, pin
        self.rows = len(rows)

    def to(self, device: torch.device) -> StreamSource:
        self.pin = device.type == "cuda"
        return self

    @property
    def device(self) -> torch.device:
        """Workers build batches in host memory (pinned for CUDA)."""
        import torch

        return torch.device("cpu")

    def epoch(self, order: np.ndarray, batch_size: int, epoch: int, first: int = 0) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        requests = [Request(epoch, n, order[n * batch_size:(n + 1) * batch_size])
                    for n in range(first, math.ceil(len(order) / batch_size))]
        loader = DataLoader(self.dataset, batch_sampler=requests, collate_fn=_first, num_workers=self.workers,
                            pin_memory=self.pin, prefetch_factor=2 if self.workers else None)
        return iter(loader)

    def sample(self, rows: int) -> Batch:
        return self.dataset.__getitems__(Request(0, 0, np.arange(min(rows, self.rows))))


Source = TensorSource | StreamSource


def batch_source(model: Model, table: Table, targets: torch.Tensor, split: str, loader: Loader, seed: int,
                 online: Sequence[Augmenter] = ()) -> Source:
    """The source for one split: in memory when it fits ``loader.max_tensor_mb`` and nothing
    asks for streaming (workers, online augmentation), else streamed from the table."""
    stream = bool(online) or loader.workers > 0
    if not stream:
        sample = model_inputs(model, table.take_positions(np.arange(min(_SAMPLE_ROWS, len(table)))), split)
        per_row = sum(t.nbytes for t in sample.values()) / max(1, min(_SAMPLE_ROWS, len(table)))
        stream = per_row * len(table) > loader.max_tensor_mb * 2 ** 20
    if stream:
        return StreamSource(TableRows(table, model, targets, seed, online), loader.workers)
    return TensorSource(model_inputs(model, table, split), targets)
