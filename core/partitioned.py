"""Engine dask: a split as partitions on a Dask cluster, and the passes cleaners fit with.

With ``data.engine: dask`` the data stage reads its source lazily in partitions (CSV and
Parquet files, folders and globs of them, through ``dask.dataframe``), gives every row its
row id (its position in the source, as pandas would) and splits by a hash of the row id, so
every worker agrees without shipping tables. A split is then a :class:`Partitioned`: a Dask
frame indexed by row id, partitions in row id order, with the schema. Cleaners fit on it by
passes over the partitions (:meth:`Partitioned.reduce`, :func:`moments`,
:func:`exact_quantiles`) and clean partition by partition (``core.stages.clean``).

dask is imported lazily, only on this path; ``pip install 'forgeline[dask]'`` installs it.
"""

from __future__ import annotations

import atexit
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from .data import ROW_ID, Schema, Table

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd
    import pandas as pd

    from .pipeline import DaskSettings

T = TypeVar("T")
_CLIENTS: dict[tuple, Any] = {}


@dataclass
class Partitioned:
    """A split held as partitions: a Dask frame indexed by row id, its schema, its metadata."""

    frame: dd.DataFrame
    schema: Schema
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def npartitions(self) -> int:
        return self.frame.npartitions

    @property
    def target(self) -> str | None:
        return self.schema.target

    def reduce(self, fn: Callable[[Table], T]) -> list[T]:
        """``fn`` run on every partition (as a :class:`Table`, on the workers); the results, in
        partition order. ``fn`` should return something small (counts, sums, histograms).

        No pass is made when every partition has a :class:`Profile` (``meta["profiles"]``,
        taken as the partition was written) and ``fn`` can answer from it (``fn.from_profile``
        returns its result, or ``NotImplemented``)."""
        import dask

        profiles, answer = self.meta.get("profiles"), getattr(fn, "from_profile", None)
        if profiles is not None and answer is not None:
            found = [answer(p) for p in profiles]
            if all(f is not NotImplemented for f in found):
                return found
        shared = dask.delayed(fn, pure=True)  # one copy in the graph, however many partitions
        return compute_each([dask.delayed(_on_table)(part, self.schema, shared)
                             for part in self.frame.to_delayed()])

    def rows(self) -> int:
        """Rows in all partitions: counted once (a pass), then remembered in ``meta["rows"]``."""
        if "rows" not in self.meta:
            self.meta["rows"] = int(sum(self.reduce(_Rows())))
        return self.meta["rows"]

    def to_table(self) -> Table:
        """Every partition gathered into one in-memory table in this process (only for what fits
        its memory): partition by partition, so no worker ever holds more than one."""
        import dask
        import pandas as pd

        if self.meta.get("folder"):  # written partitions: read here, file by file
            parts = [read_frame(f) for f in sorted(Path(self.meta["folder"]).glob("part-*.*"))]
        else:
            parts = dask.compute(*self.frame.to_delayed())
        frame = pd.concat(parts) if parts else self.frame._meta.copy()
        frame.index.name = ROW_ID
        return Table(frame, self.schema, meta=dict(self.meta))

    def select(self, keep: Callable[[pd.DataFrame], pd.DataFrame]) -> Partitioned:
        """The same split with ``keep`` (a row filter) applied to each partition, lazily."""
        meta = {k: v for k, v in self.meta.items() if k not in ("rows", "profiles")}
        return Partitioned(self.frame.map_partitions(keep, meta=self.frame._meta), self.schema, meta)


@dataclass(frozen=True)
class NumericBlock:
    """The numeric ``columns`` of a partition as one float64 array (a fresh copy), infinities
    as missing when ``finite``: what the statistics passes of the cleaners read."""

    columns: tuple[str, ...]
    finite: bool = False

    def __call__(self, table: Table) -> np.ndarray:
        x = _float_block(table.frame, self.columns)
        if self.finite:
            x[np.isinf(x)] = np.nan
        return x


def _float_block(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    return frame[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)


#: rows of a partition a :class:`Profile` keeps as its sample (fewer on wide tables: at most
#: 64 K values), what ``exact_quantiles`` places its first windows with
_PROFILE_VALUES = 65_536


@dataclass(frozen=True)
class Profile:
    """The first-pass statistics of one partition, taken where the partition is produced (the
    data stage's split pass, each clean stage's write), so the next stage's fit starts from
    them instead of a pass: rows, observed values per column, and per numeric column the
    counts of non-missing, finite and infinite values, the finite values' mean, sum of
    squared deviations, lowest and highest, and an evenly spaced sample of rows."""

    rows: int
    observed: dict[str, int]
    numeric: tuple[str, ...]
    present: np.ndarray  # non-missing (infinities included)
    finite: np.ndarray
    pos_inf: np.ndarray
    neg_inf: np.ndarray
    mean: np.ndarray  # of the finite values (0 when none)
    m2: np.ndarray
    low: np.ndarray  # lowest and highest finite value (NaN when none)
    high: np.ndarray
    sample: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Profile:
        import pandas as pd

        numeric = tuple(c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c].dtype))
        x = _float_block(frame, numeric)
        every = max(1, len(x) // max(1, min(_SAMPLE, _PROFILE_VALUES // max(1, len(numeric)))))
        sample = x[::every].copy()
        inf = np.isinf(x)
        pos_inf = neg_inf = np.zeros(len(numeric), dtype=np.int64)
        if inf.any():  # rare: count them, then read them as missing, as NumericBlock(finite=True) does
            pos_inf, neg_inf = (x == np.inf).sum(axis=0), (x == -np.inf).sum(axis=0)
            x[inf] = np.nan
        n, mean, m2 = _Moments.stats(x)
        none = np.full(len(numeric), np.nan)
        low, high = (np.fmin.reduce(x, axis=0), np.fmax.reduce(x, axis=0)) if len(x) else (none, none)
        present = n + pos_inf + neg_inf
        others = [c for c in frame.columns if c not in set(numeric)]
        observed = {**dict(zip(numeric, present.tolist())),
                    **({c: int(v) for c, v in frame[others].notna().sum().items()} if others else {})}
        return cls(rows=len(frame), observed=observed, numeric=numeric, present=present, finite=n, pos_inf=pos_inf,
                   neg_inf=neg_inf, mean=mean, m2=m2, low=low, high=high, sample=sample)

    def positions(self, values: Any) -> list[int] | None:
        """Where ``values``' columns are in this profile, when ``values`` is a
        :class:`NumericBlock` of profiled columns (else None: a pass is needed)."""
        if not isinstance(values, NumericBlock) or not set(values.columns) <= set(self.numeric):
            return None
        return [self.numeric.index(c) for c in values.columns]


@dataclass(frozen=True)
class _Rows:
    def __call__(self, table: Table) -> int:
        return len(table)

    def from_profile(self, profile: Profile) -> int:
        return profile.rows


def compute_each(tasks: list[Any]) -> list[Any]:
    """The results of dask ``tasks``, in order, each fetched from its worker as soon as it is
    done: with ``dask.compute`` finished results wait in the workers' memory for the last
    task, and a pass whose results grow with the rows (dedup's training fingerprints, ~24
    bytes a row) would fill the workers on a table several times their memory."""
    import dask

    try:
        from dask.distributed import as_completed, get_client

        client = get_client()
    except (ImportError, ValueError):  # no distributed client: dask's local scheduler
        return list(dask.compute(*tasks))
    futures = client.compute(tasks)
    where = {f.key: i for i, f in enumerate(futures)}
    done = as_completed(futures, with_results=True)
    del futures  # a result is released once read (as_completed drops what it has yielded)
    out: list[Any] = [None] * len(where)
    for future, value in done:
        out[where[future.key]] = value
    return out


def _on_table(frame: pd.DataFrame, schema: Schema, fn: Callable[[Table], T]) -> T:
    frame.index.name = ROW_ID
    return fn(Table(frame, schema))


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """A partition's rows, index (the row id) included, as Parquet or Arrow IPC by suffix."""
    if path.suffix == ".arrow":
        frame.to_feather(path, compression="lz4")
    else:
        frame.to_parquet(path)


def read_frame(path: str | Path) -> pd.DataFrame:
    """A partition written by :func:`write_frame`, indexed by row id."""
    import pandas as pd

    frame = pd.read_feather(path) if str(path).endswith(".arrow") else pd.read_parquet(path)
    frame.index.name = ROW_ID
    return frame


# ============================================================================ the cluster

def client(settings: DaskSettings) -> Any:
    """The ``dask.distributed.Client`` for ``settings`` (one per process and settings): a
    running cluster's scheduler at ``address``, else a local cluster started now."""
    import logging

    import dask
    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # shuffle notices are not the user's business
    # pyarrow's allocator (mimalloc) keeps freed pages for a while: a worker reading and writing
    # partition after partition grew past 95% of a 512 MiB limit and was restarted (500,000-row
    # partitions). Returned at once, it peaked at 320 MiB and ran faster there (no pausing);
    # elsewhere it costs 5-10% (docs/architecture.md). The system allocator: 15% slower;
    # jemalloc, or releasing after each task: restarted too. Local workers inherit it; a real
    # cluster's workers need it in their environment.
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
    # fitted state (dedup's training fingerprints) travels in the graph once, on purpose
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    same_dtypes_as_pandas()
    # tasks keep nothing in worker memory (each writes its partition out), so a worker pausing
    # at 80% would only wait for memory that is not coming back: pause later, at 90%
    dask.config.set({"distributed.worker.memory.pause": 0.9})
    key = (settings.address, settings.workers, settings.threads_per_worker, settings.memory_limit,
           settings.processes)
    found = _CLIENTS.get(key)
    if found is not None and found.status == "running":
        found.as_current()
        return found
    if settings.address:
        made = Client(settings.address, set_as_default=True)
    else:
        cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=settings.threads_per_worker,
                               memory_limit=settings.memory_limit, processes=settings.processes,
                               dashboard_address=None)
        made = Client(cluster, set_as_default=True)
    _CLIENTS[key] = made
    return made


def same_dtypes_as_pandas() -> None:
    """Text columns keep pandas' own string dtype (dask would convert them to pyarrow strings
    with ``pd.NA``), so cleaners see on partitions the frames they see on the pandas engine.
    Set in the environment too, so local worker processes started after it inherit it."""
    import dask

    os.environ["DASK_DATAFRAME__CONVERT_STRING"] = "False"
    dask.config.set({"dataframe.convert-string": False})


def worker_peaks(reset: bool = False) -> list[float]:
    """The peak resident memory (MiB) of every worker process of the current client so far;
    with ``reset``, the peaks are set back to the current use first (a phase measured alone)."""
    from dask.distributed import get_client

    try:
        found = get_client().run(peak_rss_mib, reset)
    except ValueError:  # no client: the local scheduler
        return []
    return sorted(round(v, 1) for v in found.values())


def peak_rss_mib(reset: bool = False) -> float:
    """This process's peak resident memory, MiB: ``VmHWM`` on Linux, which starts afresh at
    ``exec`` (``ru_maxrss`` keeps the peak of the process a worker was forked from, e.g. a
    client holding gigabytes); ``reset`` sets it back to the current use (``clear_refs``)."""
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@atexit.register
def close_clients() -> None:
    """Close the clients (and local clusters) this process started."""
    while _CLIENTS:
        _, made = _CLIENTS.popitem()
        cluster = made.cluster
        made.close()
        if cluster is not None:
            cluster.close()


# ============================================================================ sources and splits

def with_row_ids(frame: dd.DataFrame, budget: int | None = None) -> dd.DataFrame:
    """``frame`` indexed by row id: each row's position in the source (0, 1, ...), partitions
    keeping the source's order, with known divisions. Costs one pass counting the rows (and
    their bytes in memory). A partition holding more than ``budget`` bytes is cut into even
    row ranges (``repartition`` on the row ids: its source is still read once a pass), so a
    large Parquet file or CSV block does not take a worker past its memory limit."""
    import dask
    import dask.dataframe as dd

    sizes = np.array(compute_each([dask.delayed(_size)(p) for p in frame.to_delayed()]), dtype=np.int64)
    lengths = sizes[:, 0] if len(sizes) else np.zeros(0, np.int64)
    total = int(lengths.sum())
    if not total:
        from .errors import InputError

        raise InputError("data.source: the source has no rows; it needs a header and at least one row")
    starts = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    keep = np.flatnonzero(lengths)  # empty partitions carry no rows
    parts = frame.to_delayed()
    new = [dask.delayed(_number_rows)(parts[i], int(starts[i])) for i in keep]
    meta = _number_rows(frame._meta, 0)
    divisions = tuple(int(starts[i]) for i in keep) + (total - 1,)
    out = dd.from_delayed(new, meta=meta, divisions=divisions, verify_meta=False)
    if budget is None:
        return out
    most = max(1, int(budget * total / max(int(sizes[:, 1].sum()), 1)))  # rows a partition may hold
    cuts = [int(starts[i] + lengths[i] * j // pieces) for i in keep
            for pieces in [-(-int(lengths[i]) // most)] for j in range(pieces)]
    return out.repartition(divisions=[*cuts, total - 1]) if len(cuts) > len(keep) else out


def _size(frame: pd.DataFrame) -> tuple[int, int]:
    return len(frame), int(frame.memory_usage(index=True, deep=True).sum())


#: what a worker holds before any data (pandas, pyarrow, scikit-learn, dask), and how many
#: times its size a partition takes while a stage cleans it (copies of its values as one
#: block, masks, the output, its profile: measured 6.6x for impute on 500,000 rows, plus the
#: partition itself and the read buffers)
_WORKER_BASE, _PARTITION_COPIES = 350 * 2**20, 10


def partition_budget() -> int | None:
    """The bytes one partition may hold in memory on the current client's workers: what the
    smallest worker has between its libraries and the 90% at which it pauses, over the copies
    a stage makes (at least 4 MiB); None without a client or a memory limit."""
    try:
        from dask.distributed import get_client

        workers = get_client().scheduler_info()["workers"].values()
    except (ImportError, ValueError):
        return None
    limits = [w.get("memory_limit") or 0 for w in workers]
    if not limits or not min(limits):
        return None
    return max(int((0.9 * min(limits) - _WORKER_BASE) / _PARTITION_COPIES), 4 * 2**20)


def _number_rows(frame: pd.DataFrame, first: int) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.index = np.arange(first, first + len(frame), dtype=np.int64)
    frame.index.name = ROW_ID
    return frame


def split_partitioned(parts: Partitioned, test: float, valid: float, seed: int) -> dict[str, Partitioned]:
    """Train/valid/test by :func:`~forgeline.core.data.hash_split` of the row ids: each
    partition filtered on its workers, lazily (valid left out when its share is 0). One pass
    profiles every split's share of every partition (:class:`Profile`): its rows, and the
    statistics the first cleaner's fit would otherwise make a pass for."""
    shares = {"train": 0, "valid": 1, "test": 2}
    if not valid:
        shares.pop("valid")
    found = parts.reduce(_SplitProfiles(test, valid, seed))
    out = {}
    for name, code in shares.items():
        split = parts.select(_SplitFilter(code, test, valid, seed))
        split.meta["rows"] = int(sum(rows[code] for _, rows in found))
        if code == 0:
            split.meta["profiles"] = [profile for profile, _ in found]
        out[name] = split
    return out


@dataclass(frozen=True)
class _SplitProfiles:
    """The profile of a partition's training rows, and its rows per split code."""

    test: float
    valid: float
    seed: int

    def __call__(self, table: Table) -> tuple[Profile, np.ndarray]:
        from .data import hash_split

        codes = hash_split(table.row_ids, self.test, self.valid, self.seed)
        return Profile.of(table.frame[codes == 0]), np.bincount(codes, minlength=3)


@dataclass(frozen=True)
class _SplitFilter:
    code: int
    test: float
    valid: float
    seed: int

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        from .data import hash_split

        return frame[hash_split(frame.index.to_numpy(), self.test, self.valid, self.seed) == self.code]


# ============================================================================ passes over partitions

def moments(parts: Partitioned, values: Callable[[Table], np.ndarray], ddof: int = 0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column (observed count, mean, std) of ``values(partition)`` ignoring NaN, as
    ``nan_moments`` computes them on the whole, in one pass: each partition's count, mean and
    sum of squared deviations from its own mean, merged exactly (Chan, Golub and LeVeque's
    pairwise update); it agrees with the two-pass result to float rounding."""
    count = mean = m2 = None
    for n, m, sq in parts.reduce(_Moments(values)):
        if count is None:
            count, mean, m2 = n.astype(np.float64), m, sq
            continue
        total = count + n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(n > 0, m - mean, 0.0)
            share = np.where(total > 0, n / total, 0.0)
            mean = np.where(count > 0, mean + delta * share, m)
            m2 = m2 + sq + delta * delta * count * share
        count = total
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 0, m2, np.nan) / np.maximum(count - ddof, 0)
    return count.astype(np.int64), np.where(count > 0, mean, np.nan), np.sqrt(var)


@dataclass(frozen=True)
class _Moments:
    values: Callable[[Table], np.ndarray]

    def __call__(self, table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.stats(self.values(table))

    @staticmethod
    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, mean, sum of squared deviations from the mean) per column, NaN ignored."""
        seen = ~np.isnan(x)
        n = seen.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.add.reduce(x, axis=0, where=seen) / np.maximum(n, 1), 0.0)
        dev = x - mean
        return n, mean, np.add.reduce(dev * dev, axis=0, where=seen)

    def from_profile(self, p: Profile) -> Any:
        at = p.positions(self.values)
        if at is None or (not self.values.finite and (p.pos_inf[at].any() or p.neg_inf[at].any())):
            return NotImplemented  # infinite values count here: a pass says what they make
        return p.finite[at], p.mean[at], p.m2[at]


#: histogram bins per refinement pass; the most values gathered to pick an order statistic;
#: values a partition contributes to the sample that places the first window
_BINS, _GATHER, _SAMPLE = 1024, 200_000, 2_000
#: 1024 bins a pass narrow any float64 range to one value in far fewer passes than this
_MAX_PASSES = 400


def exact_quantiles(parts: Partitioned, values: Callable[[Table], np.ndarray], qs: list[float],
                    check: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """Per-column quantiles (``qs`` in [0, 1]) of ``values(partition)`` ignoring NaN, exactly as
    ``np.nanpercentile`` (linear interpolation) computes them on the whole, without sorting it.

    The first pass counts the values per column, their range and an evenly spaced sample. The
    sample places a window around each wanted rank (4 standard errors either side); the
    second pass counts the values below the window and gathers those in it, and when the rank
    is there (nearly always) it is picked: two passes. When a window would hold more than
    200,000 values, or missed the rank, the pass histograms it into 1024 bins instead and the
    next pass narrows to the bin holding the rank. ``check(count, low, high)`` sees the first
    pass's counts and ranges (to refuse a column without values, or with infinite ones).
    """
    first = parts.reduce(_Range(values))
    count = sum(c for c, _, _, _ in first)
    lo = np.fmin.reduce([a for _, a, _, _ in first])
    hi = np.fmax.reduce([b for _, _, b, _ in first])
    if check is not None:
        check(count, lo, hi)
    sample = np.concatenate([s for _, _, _, s in first])
    k = len(count)
    ranks = {(j, r) for j in range(k) if count[j] for q in qs
             for r in {int(np.floor(q * (count[j] - 1))), int(np.ceil(q * (count[j] - 1)))}}
    start = {(j, r): _first_window(sample[:, j], r, int(count[j]), lo[j], hi[j]) for j, r in ranks}
    found = _order_statistics(parts, values, start, {j: (lo[j], hi[j], int(count[j])) for j in range(k)})
    out = np.full((len(qs), k), np.nan)
    for i, q in enumerate(qs):
        for j in range(k):
            if count[j]:
                h = q * (count[j] - 1)
                a, b = found[(j, int(np.floor(h)))], found[(j, int(np.ceil(h)))]
                out[i, j] = a + (b - a) * (h - np.floor(h))
    return out


def _first_window(sample: np.ndarray, rank: int, n: int, lo: float, hi: float) -> tuple[float, float, int]:
    """(low, high, values expected inside) around ``rank`` of ``n`` from an even sample of the
    column: 4 standard errors of the sample's order statistic either side (the whole range
    when the sample is too small to say)."""
    s = np.sort(sample[~np.isnan(sample)])
    m = len(s)
    if m < 100:
        return lo, hi, n
    p = rank / max(n - 1, 1)
    at, spread = p * (m - 1), 4 * np.sqrt(m * p * (1 - p)) + 2
    i, e = int(np.floor(at - spread)), int(np.ceil(at + spread))
    a, b = (s[i] if i > 0 else lo), (s[e] if e < m - 1 else hi)
    return a, b, int(n * (min(e, m - 1) - max(i, 0) + 1) / m)


def _order_statistics(parts: Partitioned, values: Callable[[Table], np.ndarray],
                      search: dict[tuple[int, int], tuple[float, float, int]],
                      whole: dict[int, tuple[float, float, int]]) -> dict[tuple[int, int], float]:
    """The value of rank ``r`` in column ``j`` for every ``(j, r)``; ``search`` maps each to a
    window (low, high, values expected inside), narrowed pass by pass; a window that missed
    its rank starts again from the column's whole range (``whole[j]``)."""
    found: dict[tuple[int, int], float] = {}
    cap = max(2 * _GATHER // max(parts.npartitions, 1), 100)  # values one partition may send back
    for _ in range(_MAX_PASSES):
        if not search:
            return found
        windows = {key: (a, b) for key, (a, b, _) in search.items()}
        gather = {key for key, (a, b, n) in search.items() if n <= _GATHER}
        results = parts.reduce(_Window(values, windows, frozenset(gather), cap))
        for key, (a, b, _) in list(search.items()):
            below = key[1] - sum(res[key][0] for res in results)  # the rank within the window
            hist, low, high, got = _merged(a, b, [res[key][1] for res in results])
            if not 0 <= below < hist.sum():
                search[key] = whole[key[0]]  # the window missed the rank
            elif low == high:  # one value fills the window
                found[key] = float(low)
            elif got is not None:
                found[key] = float(np.partition(got, below)[below])
            else:
                edges = np.linspace(a, b, _BINS + 1)
                i = int(np.searchsorted(np.cumsum(hist), below, side="right"))
                search[key] = (edges[i], edges[i + 1] if i + 1 < _BINS else b, int(hist[i]))
            if key in found:
                del search[key]
    raise RuntimeError(f"exact quantiles: ranks {sorted(search)[:3]} not placed after {_MAX_PASSES} passes; the "
                       "partitions changed between passes, or their first-pass counts are wrong")


def _merged(a: float, b: float, payloads: list[tuple]) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """The partitions' answers for one window as (histogram, lowest, highest value inside, the
    values when every partition sent them, else None)."""
    if all(p[0] == "values" for p in payloads):
        got = np.concatenate([p[1] for p in payloads])
        low, high = (got.min(), got.max()) if len(got) else (np.nan, np.nan)
        return np.array([len(got)]), low, high, got
    hist = sum(p[1] if p[0] == "hist" else _histogram(p[1], a, b) for p in payloads)
    low = np.fmin.reduce([p[2] if p[0] == "hist" else _lowest(p[1]) for p in payloads])
    high = np.fmax.reduce([p[3] if p[0] == "hist" else _highest(p[1]) for p in payloads])
    return hist, low, high, None


def _lowest(x: np.ndarray) -> float:
    return x.min() if len(x) else np.nan


def _highest(x: np.ndarray) -> float:
    return x.max() if len(x) else np.nan


def _histogram(inside: np.ndarray, a: float, b: float) -> np.ndarray:
    """Counts of ``inside`` in 1024 bins over [a, b]: bin i holds [edge i, edge i+1), the last also b."""
    edges = np.linspace(a, b, _BINS + 1)
    return np.bincount(np.minimum(np.searchsorted(edges, inside, side="right") - 1, _BINS - 1), minlength=_BINS)


@dataclass(frozen=True)
class _Range:
    values: Callable[[Table], np.ndarray]

    def __call__(self, table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = self.values(table)
        empty = np.full(x.shape[1], np.nan)
        every = max(1, len(x) // _SAMPLE)
        return ((~np.isnan(x)).sum(axis=0), np.fmin.reduce(x, axis=0) if len(x) else empty,
                np.fmax.reduce(x, axis=0) if len(x) else empty, x[::every])

    def from_profile(self, p: Profile) -> Any:
        """The same counts and ranges (the sample differs, which moves no quantile)."""
        at = p.positions(self.values)
        if at is None:
            return NotImplemented
        finite, low, high, sample = p.finite[at], p.low[at], p.high[at], p.sample[:, at]
        if self.values.finite:
            return finite, low, high, np.where(np.isinf(sample), np.nan, sample)
        pos, neg = p.pos_inf[at] > 0, p.neg_inf[at] > 0
        some = finite > 0
        low = np.where(neg, -np.inf, np.where(some, low, np.where(pos, np.inf, np.nan)))
        high = np.where(pos, np.inf, np.where(some, high, np.where(neg, -np.inf, np.nan)))
        return p.present[at], low, high, sample


@dataclass(frozen=True)
class _Window:
    """Per (column, rank): the values below its window, and the values inside it (when few:
    at most ``cap``) or their histogram with the lowest and highest."""

    values: Callable[[Table], np.ndarray]
    windows: dict[tuple[int, int], tuple[float, float]]
    gather: frozenset
    cap: int

    def __call__(self, table: Table) -> dict[tuple[int, int], Any]:
        x = self.values(table)
        out: dict[tuple[int, int], Any] = {}
        for (j, r), (a, b) in self.windows.items():
            col = x[:, j]
            below = int((col < a).sum())
            if a == b:  # one value (a 0/1 indicator's median, say): count it, no histogram
                n = int((col == a).sum())
                out[(j, r)] = (below, ("hist", np.array([n]), a if n else np.nan, a if n else np.nan))
                continue
            inside = col[(col >= a) & (col <= b)]
            if (j, r) in self.gather and len(inside) <= self.cap:
                out[(j, r)] = (below, ("values", inside))
            else:
                out[(j, r)] = (below, ("hist", _histogram(inside, a, b), _lowest(inside), _highest(inside)))
        return out
