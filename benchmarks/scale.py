"""Scale benchmark: the numeric cleaning stages and dedup on Dask, against pandas and hand-written Dask.

The stages: sigma-outliers (clip, k=3), impute (median, indicator columns), robust-scale
(interquartile range) and dedup (exact copies), on a generated table of ``--rows`` x ``--cols``
floats with outliers, missing values and exact copies (``--copies``: 1%), written as ``--files`` Parquet files
(one file in memory at a time). Printed, with the ratios:

1. forgeline, engine dask: the stages through the engine itself (the data stage's split
   pass profiling the partitions, fit by passes over the partitions or from those profiles,
   each partition cleaned on a worker, kept rows written after every stage — Arrow IPC
   between stages, Parquet at the end — and quarantined rows as Parquet, the accounting
   checked per partition) on a local cluster of ``--workers`` processes limited to
   ``--memory-limit`` each;
2. the same operations written directly in Dask (``mean``/``std``, ``clip``, ``quantile``:
   dask's approximate quantiles, ``fillna``, ``drop_duplicates``, one ``to_parquet`` at the
   end) on the same cluster, restarted so each gets fresh workers;
3. the same forgeline cleaners on pandas, in this process, on the first ``--pandas-rows``
   rows (the largest table pandas holds comfortably here): rows per second compared.

Peak memory per worker is each worker process's peak RSS during the phase (``VmHWM``, reset
before the phase through ``/proc/self/clear_refs``: ``worker_peaks``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def generate(folder: Path, rows: int, cols: int, files: int, seed: int, copies: float = 0.01) -> list[str]:
    """``files`` Parquet files of floats: outliers (0.1%), missing values (2%), exact copies (``copies``)."""
    out = []
    per = rows // files
    for i in range(files):
        rng = np.random.default_rng([seed, i])
        X = rng.normal(0, 1, (per, cols)) * np.linspace(1, 10, cols) + np.linspace(-5, 5, cols)
        X[rng.random((per, cols)) < 0.001] *= 50
        X[rng.random((per, cols)) < 0.02] = np.nan
        copied = rng.random(per) < copies
        X[copied] = X[rng.integers(0, per, int(copied.sum()))]
        frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(cols)])
        path = folder / f"part-{i:05d}.parquet"
        frame.to_parquet(path, index=False)
        out.append(str(path))
    return out


def stages():
    from forgeline.plugins.clean import Dedup, Impute, RobustScale, SigmaOutliers

    return [SigmaOutliers(action="clip", k=3), Impute(strategy="median"), RobustScale(), Dedup(method="exact")]


def forgeline_dask(files: list[str], work: Path) -> int:
    """The four stages through the engine; returns the rows kept."""
    import dask.dataframe as dd

    from forgeline.core.data import Schema
    from forgeline.core.partitioned import Partitioned, partition_budget, split_partitioned, with_row_ids
    from forgeline.core.stages.partitions import partition_plan, run_partitions

    frame = with_row_ids(dd.read_parquet(files), partition_budget())
    # the data stage's split pass (every row in the training split here) profiles the partitions
    parts = split_partitioned(Partitioned(frame, Schema.infer(frame._meta)), 0.0, 0.0, seed=0)["train"]
    cleaners = stages()
    for i, cleaner in enumerate(cleaners):
        plan = partition_plan(cleaner, parts, fit=True)
        counts, parts, _ = run_partitions(parts, plan.apply, work / f"stage{i}", work / f"quarantine{i}",
                                          f"clean.{i}", "train", final=i == len(cleaners) - 1,
                                          profile=i < len(cleaners) - 1)
        if i:
            shutil.rmtree(work / f"stage{i - 1}")
    return counts["rows_out"]


def by_hand_dask(files: list[str], work: Path) -> int:
    """The same operations in plain Dask, one lazy chain written once; returns the rows kept."""
    import dask
    import dask.dataframe as dd

    df = dd.read_parquet(files)
    cols = list(df.columns)
    finite = df.replace([np.inf, -np.inf], np.nan)
    mean, std = dask.compute(finite.mean(), finite.std())
    df = df.clip(lower=mean - 3 * std, upper=mean + 3 * std, axis=1)
    median = df.quantile(0.5).compute()
    had = df.isna().any().compute()
    indicators = df[[c for c in cols if had[c]]].isna().astype("int8")
    indicators.columns = [f"{c}__imputed" for c in indicators.columns]
    df = dd.concat([df.fillna(median), indicators], axis=1)
    q = df[cols].quantile([0.25, 0.5, 0.75]).compute()
    df = df.assign(**{c: (df[c] - q.loc[0.5, c]) / (q.loc[0.75, c] - q.loc[0.25, c]) for c in cols})
    df = df.drop_duplicates(split_out=df.npartitions)
    df.to_parquet(work / "by-hand")
    return len(dd.read_parquet(work / "by-hand"))


def forgeline_pandas(files: list[str], rows: int) -> tuple[int, int]:
    """The same cleaners on pandas in this process: (rows cleaned, rows kept)."""
    from forgeline.core import Table

    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).iloc[:rows]
    table = Table.from_frame(frame)
    for cleaner in stages():
        table = cleaner.fit_apply(table).table
    return len(frame), len(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=12_000_000, help="rows of the generated table")
    ap.add_argument("--cols", type=int, default=8, help="float columns")
    ap.add_argument("--files", type=int, default=48, help="Parquet files (partitions)")
    ap.add_argument("--pandas-rows", type=int, default=4_000_000, help="rows the pandas run cleans")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="640MiB", help="per worker")
    ap.add_argument("--copies", type=float, default=0.01, help="share of rows that copy another row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a small run: 400,000 rows, 8 files")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.files, a.pandas_rows = 400_000, 8, 400_000
    from forgeline.core.partitioned import client, peak_rss_mib, worker_peaks
    from forgeline.core.pipeline import DaskSettings

    tmp = Path(tempfile.mkdtemp(prefix="forgeline-scale-"))
    try:
        files = generate(tmp, a.rows, a.cols, a.files, a.seed, a.copies)
        size = a.rows * a.cols * 8 / 2**20
        print(f"table: {a.rows:,} x {a.cols} floats = {size:,.0f} MiB in memory, {a.files} Parquet files; "
              f"{a.workers} workers x {a.memory_limit}")
        c = client(DaskSettings(workers=a.workers, memory_limit=a.memory_limit, threads_per_worker=1))
        worker_peaks(reset=True)
        start = time.perf_counter()
        kept = forgeline_dask(files, tmp)
        ours, ours_peak = time.perf_counter() - start, worker_peaks()
        c.restart()
        worker_peaks(reset=True)
        start = time.perf_counter()
        try:
            kept_by_hand = by_hand_dask(files, tmp)
        except Exception as e:  # noqa: BLE001 (e.g. KilledWorker: reported, the other runs still made)
            kept_by_hand = f"nothing: it failed, {type(e).__name__}"
        hand, hand_peak = time.perf_counter() - start, worker_peaks()
        c.close()
        peak_rss_mib(reset=True)
        start = time.perf_counter()
        pandas_rows, pandas_kept = forgeline_pandas(files, a.pandas_rows)
        pand, pandas_peak = time.perf_counter() - start, peak_rss_mib()
        print(f"  forgeline dask  {ours:8.1f} s  {a.rows / ours:12,.0f} rows/s  kept {kept:,}  "
              f"peak per worker {ours_peak} MiB")
        print(f"  dask by hand    {hand:8.1f} s  {a.rows / hand:12,.0f} rows/s  kept {kept_by_hand:,}  "
              f"peak per worker {hand_peak} MiB" if isinstance(kept_by_hand, int) else
              f"  dask by hand    {hand:8.1f} s  kept {kept_by_hand}")
        print(f"  forgeline pandas{pand:8.1f} s  {pandas_rows / pand:12,.0f} rows/s  on {pandas_rows:,} rows "
              f"(kept {pandas_kept:,}), peak of this process during it {pandas_peak:,.0f} MiB")
        if isinstance(kept_by_hand, int):
            print(f"  ratio forgeline dask / dask by hand: {hand / ours:.2f}x (higher = forgeline faster)")
        print(f"  ratio forgeline dask / pandas (rows/s): {(a.rows / ours) / (pandas_rows / pand):.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
