"""Cleaned Parquet partitions read by the ranks, each its own shard, row group by row group.

Under ``forgeline run --nproc N`` with ``data.engine: dask`` the splits reach training as
:class:`ParquetSplit`: the part files the last clean stage wrote (``cleaned/<split>/``), in
row order, known by their footers only. Rank r of N reads positions ``[r*k, (r+1)*k)`` of
the split's rows in that order, ``k = ceil(rows / N)``, wrapping around to the first rows as
``DistributedSampler`` pads, so every rank takes the same number of steps. A
:class:`ShardRows` dataset reads the row groups a batch needs (a few cached per worker) and
builds the batch; each epoch's order shuffles the shard's pieces, then the rows within
windows of :data:`WINDOW_PIECES` pieces, from the seed, the epoch and the rank.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..components import Augmenter, Model
from ..data import ROW_ID, Schema, Table
from .batches import Batch, Request, StreamSource, encode_targets, table_batch

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from ..pipeline import Loader
    from . import TrainJob

#: pieces whose rows an epoch's order mixes together (and row groups a worker keeps read)
WINDOW_PIECES = 4
#: at most this many rows, whole row groups evenly spaced over the split, fit the model's encodings
FIT_SAMPLE_ROWS = 200_000


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of row group ``group`` of Parquet file ``file``."""

    file: str
    group: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class ParquetSplit:
    """A split as Parquet files in row order: its row groups (from the footers) and its schema."""

    folder: Path
    schema: Schema
    groups: list[Piece]  # every row group whole, in row order

    @classmethod
    def open(cls, folder: Path, schema: Schema) -> ParquetSplit:
        import pyarrow.parquet as pq

        groups = []
        for f in sorted(Path(folder).glob("part-*.parquet")):
            meta = pq.ParquetFile(f).metadata
            groups += [Piece(str(f), g, 0, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        return cls(Path(folder), schema, [g for g in groups if len(g)])

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def shard(self, replica: int, replicas: int) -> list[Piece]:
        """Replica ``replica``'s contiguous rows (``ceil(rows / replicas)``, wrapping around)."""
        total = len(self)
        per = math.ceil(total / replicas) if total else 0
        pieces, position, left = [], replica * per % max(total, 1), per
        while left > 0:
            take = min(left, total - position)
            pieces += _pieces_of(self.groups, position, position + take)
            left, position = left - take, 0
        return pieces

    def fit_sample(self) -> list[Piece]:
        """Whole row groups evenly spaced over the split, at most :data:`FIT_SAMPLE_ROWS` rows
        (at least one group): the same on every rank."""
        if len(self) <= FIT_SAMPLE_ROWS:
            return list(self.groups)
        step = len(self) / FIT_SAMPLE_ROWS
        chosen, budget = [], FIT_SAMPLE_ROWS
        for i in np.unique(np.floor(np.arange(0, len(self.groups), step)).astype(int)):
            if len(self.groups[i]) <= budget or not chosen:
                chosen.append(self.groups[i])
                budget -= len(self.groups[i])
        return chosen

    def read(self, pieces: Sequence[Piece], columns: list[str] | None = None) -> Table:
        """The rows of ``pieces``, in order, as one table (for what is small: a sample, a held-out split)."""
        import pandas as pd

        schema = self.schema if columns is None else Schema(tuple(c for c in self.schema.columns if c.name in columns))
        reader = GroupReader(columns)
        frames = [reader.piece(p) for p in pieces]
        if not frames:  # no rows: the columns only
            frames = [pd.DataFrame(columns=schema.names(), index=pd.Index([], dtype=np.int64, name=ROW_ID))]
        return Table(pd.concat(frames), schema)

    def to_table(self) -> Table:
        return self.read(self.groups)


def _pieces_of(groups: list[Piece], start: int, stop: int) -> list[Piece]:
    """Positions ``[start, stop)`` of the split as pieces of its row groups."""
    out, offset = [], 0
    for g in groups:
        lo, hi = max(start - offset, 0), min(stop - offset, len(g))
        if lo < hi:
            out.append(Piece(g.file, g.group, lo, hi))
        offset += len(g)
    return out


class GroupReader:
    """Reads pieces, keeping the last :data:`WINDOW_PIECES` row groups read."""

    def __init__(self, columns: list[str] | None = None) -> None:
        self.columns, self.cache = columns, OrderedDict()

    def piece(self, p: Piece) -> pd.DataFrame:
        key = (p.file, p.group)
        if key not in self.cache:
            import pyarrow.parquet as pq

            cols = None if self.columns is None else [*self.columns, ROW_ID]
            frame = pq.ParquetFile(p.file).read_row_group(p.group, columns=cols).to_pandas()
            frame.index.name = ROW_ID
            self.cache[key] = frame
            while len(self.cache) > WINDOW_PIECES:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key].iloc[p.start:p.stop]


class ShardRows:
    """A map-style dataset over pieces of a :class:`ParquetSplit` that builds whole batches.

    Positions are the shard's own (0 .. rows-1, in the pieces' order); a batch reads only
    the row groups its positions fall in. Worker processes get a copy without the cache.
    """

    def __init__(self, split: ParquetSplit, pieces: list[Piece], model: Model, targets: torch.Tensor,
                 seed: int, online: Sequence[Augmenter] = ()) -> None:
        self.split, self.pieces, self.model, self.targets = split, pieces, model, targets
        self.seed, self.online = seed, tuple(online)
        self.offsets = np.cumsum([0] + [len(p) for p in pieces])
        self.reader = GroupReader()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "reader": GroupReader()}

    def rows(self, positions: np.ndarray) -> Table:
        """The shard's rows at ``positions``, in that order."""
        import pandas as pd

        which = np.searchsorted(self.offsets, positions, side="right") - 1
        local = positions - self.offsets[which]
        picked = [np.flatnonzero(which == i) for i in np.unique(which)]  # batch rows per piece
        frame = pd.concat([self.reader.piece(self.pieces[which[at[0]]]).iloc[local[at]] for at in picked])
        back = np.empty(len(positions), dtype=np.int64)
        back[np.concatenate(picked)] = np.arange(len(positions))  # the pieces' rows back in batch order
        return Table(frame.iloc[back], self.split.schema)

    def __getitems__(self, request: Request) -> Batch:
        import torch

        return table_batch(self.model, self.rows(request.positions), self.targets[torch.from_numpy(request.positions)],
                           request, self.seed, self.online)


class ShardSource(StreamSource):
    """A rank's shard of a :class:`ParquetSplit`, streamed: the loop takes its order from here."""

    sharded = True
    fitted_on = 0  # rows the model's encodings were fitted on (set by ``Data.prepare_shards``)

    def __init__(self, rows: ShardRows, workers: int, replica: int, row_ids: np.ndarray) -> None:
        super().__init__(rows, workers)
        self.replica, self.row_ids = replica, row_ids

    @classmethod
    def open(cls, split: ParquetSplit, replica: int, replicas: int, model: Model, job: TrainJob, name: str,
             loader: Loader, online: Sequence[Augmenter] = ()) -> ShardSource:
        """Replica ``replica``'s shard; its targets (one column) read and encoded now."""
        pieces = split.shard(replica, replicas)
        column = split.read(pieces, [split.schema.target] if split.schema.target else [])
        targets = encode_targets(column, job.task, job.classes, name)
        return cls(ShardRows(split, pieces, model, targets, job.seed, online), loader.workers, replica,
                   column.row_ids)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's positions: pieces shuffled, then rows shuffled within windows of pieces."""
        rows: ShardRows = self.dataset
        rng = np.random.default_rng([rows.seed, epoch, self.replica])
        spans = [np.arange(rows.offsets[i], rows.offsets[i + 1]) for i in rng.permutation(len(rows.pieces))]
        windows = [np.concatenate(spans[i:i + WINDOW_PIECES]) for i in range(0, len(spans), WINDOW_PIECES)]
        return np.concatenate([rng.permutation(w) for w in windows] or [np.empty(0, np.int64)]).astype(np.int64)

    def record(self) -> dict[str, Any]:
        """What this rank read: its rows, and each piece with the first and last row id found in it."""
        rows: ShardRows = self.dataset
        ids = [self.row_ids[a:b] for a, b in zip(rows.offsets[:-1], rows.offsets[1:])]
        return {"replica": self.replica, "rows": len(rows), "split_rows": len(rows.split),
                "pieces": [{"file": Path(p.file).name, "row_group": p.group, "rows": len(p),
                            "first_row_id": int(i[0]), "last_row_id": int(i[-1])}
                           for p, i in zip(rows.pieces, ids)]}
