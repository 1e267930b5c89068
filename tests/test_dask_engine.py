"""Engine dask: the data and clean stages on partitions give pandas' results, row by row.

In-process tests share one threaded local cluster (starting one costs seconds); the CLI
tests run ``forgeline run`` in a subprocess on a tiny pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.dataframe as dd  # noqa: E402

from conftest import pip_install_target, run_cli, write_distribution  # noqa: E402
from forgeline.core import Table  # noqa: E402
from forgeline.core import partitioned  # noqa: E402
from forgeline.core.data import ROW_ID, hash_split  # noqa: E402
from forgeline.core.partitioned import Partitioned, exact_quantiles, moments  # noqa: E402
from forgeline.core.pipeline import DaskSettings  # noqa: E402
from forgeline.core.stages.partitions import merge_reports, partition_plan  # noqa: E402
from forgeline.core.partitioned import NumericBlock  # noqa: E402
from forgeline.plugins.clean.dedup import Dedup  # noqa: E402
from forgeline.plugins.clean.impute import Impute  # noqa: E402
from forgeline.plugins.clean.label_consistency import LabelConsistency  # noqa: E402
from forgeline.plugins.clean.robust_scale import RobustScale  # noqa: E402
from forgeline.plugins.clean.sigma_outliers import SigmaOutliers  # noqa: E402
from forgeline.plugins.datasets.credit import Credit  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    made = partitioned.client(DaskSettings(processes=False, workers=2))
    yield made
    partitioned.close_clients()


@pytest.fixture(scope="module")
def credit() -> Table:
    """The credit table with 300 copied rows appended (copies land in other partitions)."""
    ds = Credit(rows=3000)
    table = ds.load(ds.context)
    frame = table.frame
    copies = frame.sample(300, random_state=1)
    copies.index = pd.RangeIndex(len(frame), len(frame) + 300, name=ROW_ID).astype(np.int64)
    from dataclasses import replace

    from forgeline.core.data import ColumnSpec, Role, Schema
    schema = Schema(tuple(ColumnSpec(c.name, Role.TARGET if c.name == "default" else c.role, c.modality)
                          for c in table.schema.columns))
    return replace(table, frame=pd.concat([frame, copies]), schema=schema, meta={})


def _parts(table: Table, n: int = 4) -> Partitioned:
    return Partitioned(dd.from_pandas(table.frame, npartitions=n, sort=True), table.schema)


def _on_partitions(cleaner, table: Table, fit: bool):
    plan = partition_plan(cleaner, _parts(table), fit)
    outs = _parts(table).reduce(plan.apply)
    kept = pd.concat([o.table.frame for o in outs])
    removed = pd.concat([o.removed for o in outs]).sort_index()
    return kept, removed, np.sort(np.concatenate([np.asarray(o.flagged) for o in outs])), plan


CLEANERS = [
    SigmaOutliers(action="drop"), SigmaOutliers(robust=True, action="clip"), SigmaOutliers(action="flag", k=2),
    Impute(), Impute(strategy="mean"), Impute(strategy="most-frequent"), Impute(strategy="constant"),
    Dedup(columns=["comment"]), Dedup(method="exact"), Dedup(columns=["comment"], against_training=False),
    Dedup(method="exact", against_training=False),
    LabelConsistency(action="drop"), LabelConsistency(action="relabel", held_out="same"),
    RobustScale(), RobustScale(quantile_range=(10.0, 90.0), unit_variance=True),
]


@pytest.mark.parametrize("cleaner", CLEANERS, ids=lambda c: f"{c.name}-{'-'.join(map(str, c.params.model_dump().values()))[:40]}")
def test_each_cleaner_on_partitions_equals_pandas_row_by_row(cluster, credit: Table, cleaner) -> None:
    code = hash_split(credit.row_ids, 0.25, 0.0, 7)
    train, test = credit.take_mask(code == 0), credit.take_mask(code == 2)
    reference = type(cleaner)(cleaner.params)
    expected = {"train": reference.fit_apply(train), "test": reference.apply(test)}
    for name, table in (("train", train), ("test", test)):
        kept, removed, flagged, plan = _on_partitions(cleaner, table, fit=name == "train")
        want = expected[name]
        if isinstance(cleaner, Dedup):  # the clusters the report describes: the same
            same = ("clusters", "largest_cluster", "cluster_examples", "exact_duplicates_removed")
            assert {k: plan.report.get(k) for k in same} == {k: want.report[k] for k in same}, name
        assert kept.index.equals(want.table.frame.index), name
        pd.testing.assert_frame_equal(kept, want.table.frame, check_exact=False, rtol=1e-12)
        assert removed.index.equals(want.removed.sort_index().index), name
        assert removed["reason"].tolist() == want.removed.sort_index()["reason"].tolist()
        assert np.array_equal(flagged, np.sort(want.flagged))
    if isinstance(cleaner, Dedup):  # the fitted training fingerprints: the same as one pandas fit
        assert np.array_equal(cleaner.train_ids_, reference.train_ids_)
        assert np.array_equal(cleaner.train_row_hash_, reference.train_row_hash_)


def test_label_consistency_on_a_sample_says_so(cluster, credit: Table) -> None:
    cleaner = LabelConsistency(action="drop", sample_rows=1000)
    kept, removed, _, plan = _on_partitions(cleaner, credit, fit=True)
    assert plan.report["judged"].startswith("a hash sample of")
    assert len(kept) + len(removed) == len(credit) and len(removed) > 0


def test_exact_quantiles_refine_to_numpys_percentiles(cluster, monkeypatch) -> None:
    """Few values gathered per pass forces several histogram passes; ties, NaN and a constant column."""
    monkeypatch.setattr(partitioned, "_GATHER", 20)
    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 7, n).astype(float),
                          "c": np.where(rng.random(n) < 0.3, np.nan, rng.lognormal(size=n) * 1e6),
                          "d": np.full(n, 2.5), "e": (rng.random(n) < 0.05).astype(float)},  # mostly ties
                         index=pd.Index(np.arange(n), name=ROW_ID))
    parts = _parts(Table.from_frame(frame), 5)
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.999, 1.0]
    got = exact_quantiles(parts, NumericBlock(tuple(frame.columns)), qs)
    np.testing.assert_allclose(got, np.nanpercentile(frame.to_numpy(), [q * 100 for q in qs], axis=0), rtol=1e-13)
    # a sample that misleads the first window (every sampled value is 0): the rank is missed,
    # and the search starts again from the whole range
    monkeypatch.setattr(partitioned, "_SAMPLE", 50)
    odd = pd.DataFrame({"v": np.where(np.arange(n) % 20 == 0, 0.0, rng.normal(100, 1, n))},
                       index=pd.Index(np.arange(n), name=ROW_ID))
    got = exact_quantiles(_parts(Table.from_frame(odd), 5), NumericBlock(("v",)), [0.5, 0.9])
    np.testing.assert_allclose(got[:, 0], np.percentile(odd["v"], [50, 90]), rtol=1e-13)
    count, mean, std = moments(parts, NumericBlock(tuple(frame.columns)), ddof=1)
    np.testing.assert_allclose(mean, frame.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, frame.std().to_numpy(), rtol=1e-10, atol=1e-12)
    assert count.tolist() == frame.notna().sum().tolist()


def test_profiles_answer_first_passes_exactly_without_a_pass(cluster, monkeypatch) -> None:
    """The split pass counts every split's rows and profiles the training split's partitions;
    rows, observed counts, moments and the first quantile pass then come from the profiles,
    equal to the passes they replace."""
    rng = np.random.default_rng(2)
    n = 4000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": np.where(rng.random(n) < 0.2, np.nan, rng.exponential(size=n)),
                          "c": rng.choice([1.5, -2.0, np.inf, -np.inf, np.nan], n, p=[0.4, 0.4, 0.05, 0.05, 0.1]),
                          "d": rng.integers(0, 9, n), "s": rng.choice(["x", "y", None], n)},
                         index=pd.Index(np.arange(n), name=ROW_ID))
    whole = _parts(Table.from_frame(frame), 4).select(lambda f: f[f.index >= 1000])  # partition 0 empty
    splits = partitioned.split_partitioned(whole, 0.3, 0.2, seed=1)
    calls = []
    counting = partitioned.compute_each
    monkeypatch.setattr(partitioned, "compute_each", lambda tasks: calls.append(1) or counting(tasks))
    finite, every = NumericBlock(("a", "b", "c", "d"), finite=True), NumericBlock(("a", "b", "c", "d"))
    from forgeline.plugins.clean._partitions import observed_counts
    lengths = [len(s.frame.compute()) for s in splits.values()]
    calls.clear()
    assert [s.rows() for s in splits.values()] == lengths and not calls  # every split's rows known
    for split in [splits["train"]]:  # the training split is profiled (what cleaners fit on)
        bare = Partitioned(split.frame, split.schema)  # the same partitions, no profiles
        calls.clear()
        got = (split.rows(), observed_counts(split, list(frame.columns)), moments(split, finite, ddof=1))
        assert not calls  # answered from the profiles
        want = (bare.rows(), observed_counts(bare, list(frame.columns)), moments(bare, finite, ddof=1))
        assert got[0] == want[0] and got[1].equals(want[1])
        for mine, theirs in zip(got[2], want[2]):
            np.testing.assert_array_equal(mine, theirs)
        calls.clear()
        mine = moments(split, every)  # infinities in "c": a pass says what they make of the mean
        assert calls
        for a, b in zip(mine, moments(bare, every)):
            np.testing.assert_array_equal(a, b)
        qs = [0.0, 0.25, 0.5, 0.9, 1.0]
        calls.clear()
        mine = exact_quantiles(split, every, qs)
        profiled_passes, calls[:] = len(calls), []
        np.testing.assert_array_equal(mine, exact_quantiles(bare, every, qs))
        assert profiled_passes == len(calls) - 1  # the first pass came from the profiles
        rows = split.frame.compute()
        np.testing.assert_array_equal(mine, np.nanpercentile(rows[["a", "b", "c", "d"]].to_numpy(float),
                                                             [q * 100 for q in qs], axis=0))


def test_partitions_over_the_memory_budget_are_cut_into_even_row_ranges(cluster) -> None:
    frame = pd.DataFrame({"x": np.arange(1000.0), "y": np.arange(1000) % 7})
    source = dd.from_pandas(frame, npartitions=2, sort=False)
    size = sum(p.memory_usage(index=True, deep=True).sum() for p in dask.compute(*source.to_delayed()))
    whole = partitioned.with_row_ids(source)
    cut = partitioned.with_row_ids(source, budget=-(-size // 10))  # a tenth of the rows' bytes: 100 rows
    assert whole.npartitions == 2 and cut.npartitions == 10
    assert cut.divisions == (*range(0, 1000, 100), 999)
    got = cut.compute()
    assert got.index.tolist() == list(range(1000)) and got.index.name == ROW_ID
    pd.testing.assert_frame_equal(got, whole.compute())
    assert [len(p) for p in dask.compute(*cut.to_delayed())] == [100] * 10


def test_hash_split_is_deterministic_and_independent_of_partitioning() -> None:
    ids = np.arange(100_000, dtype=np.int64)
    whole = hash_split(ids, 0.2, 0.1, 3)
    shuffled = np.random.default_rng(1).permutation(ids)
    assert np.array_equal(hash_split(shuffled, 0.2, 0.1, 3), whole[shuffled])  # any order, any partition
    assert np.array_equal(np.concatenate([hash_split(c, 0.2, 0.1, 3) for c in np.array_split(ids, 7)]), whole)
    shares = np.bincount(whole, minlength=3) / len(ids)
    np.testing.assert_allclose(shares, [0.7, 0.1, 0.2], atol=0.01)
    assert not np.array_equal(hash_split(ids, 0.2, 0.1, 4), whole)  # the seed changes it


def test_merged_reports_sum_counts_and_keep_agreed_values() -> None:
    merged = merge_reports([{"rows_in": 3, "k": 3.0, "per": {"a": 1}, "mean": 0.5},
                            {"rows_in": 4, "k": 3.0, "per": {"a": 2}, "mean": 0.7}])
    assert merged == {"rows_in": 7, "k": 3.0, "per": {"a": 3}}


# ------------------------------------------------------------- the CLI, end to end

PIPELINE = """\
name: tiny-{engine}
seed: 5
data:
  source: {source}
  target: default
  engine: {engine}
  split: {{test: 0.2, validation: 0.1, method: hash}}
  dask: {{processes: false, workers: 2}}
clean:
  - use: sigma-outliers
    with: {{action: drop}}
  - use: impute
  - use: dedup
    with: {{columns: [comment]}}
  - use: label-consistency
    with: {{action: drop}}
  - use: robust-scale
train:
  model: {{use: mlp, with: {{hidden: [16]}}}}
  epochs: 1
"""


@pytest.fixture(scope="module")
def parquet_glob(tmp_path_factory, credit: Table) -> str:
    folder = tmp_path_factory.mktemp("parquet-source")
    frame = credit.frame.reset_index(drop=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[chunk].to_parquet(folder / f"part-{i}.parquet", index=False)
    return str(folder / "*.parquet")


def _run(tmp_path: Path, engine: str, source: str, *extra: str) -> tuple[dict, Path]:
    file = tmp_path / f"{engine}.yaml"
    file.write_text(PIPELINE.format(engine=engine, source=source))
    r = run_cli("run", str(file), "--out", str(tmp_path / "runs"), "--json", *extra, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    return json.loads((Path(summary["run"]) / "manifest.json").read_text()), Path(summary["run"])


def test_cli_run_on_dask_cleans_like_pandas_writes_partitions_and_trains(tmp_path: Path, parquet_glob: str) -> None:
    dask_manifest, dask_run = _run(tmp_path, "dask", parquet_glob)
    pandas_manifest, pandas_run = _run(tmp_path, "pandas", parquet_glob)
    stages = {s["id"]: s for s in dask_manifest["stages"]}
    reference = {s["id"]: s for s in pandas_manifest["stages"]}
    assert stages["data"]["report"]["partitions"] == 3
    for i, name in enumerate(["sigma-outliers", "impute", "dedup", "label-consistency", "robust-scale"]):
        got, want = stages[f"clean.{i}"]["report"], reference[f"clean.{i}"]["report"]
        for split in ("train", "valid", "test"):
            counts = got[split]
            assert counts["rows_in"] == counts["rows_out"] + counts["removed"]  # the accounting, in total
            assert {k: counts[k] for k in ("rows_in", "rows_out", "removed")} == \
                {k: want[split][k] for k in ("rows_in", "rows_out", "removed")}, (name, split)
        if want["quarantine"]:  # the same rows quarantined, for the same reasons
            mine = pd.read_parquet(dask_run / got["quarantine"]).sort_index()
            theirs = pd.read_csv(pandas_run / want["quarantine"], index_col=ROW_ID).sort_index()
            assert mine.index.tolist() == theirs.index.tolist()
            assert mine["reason"].tolist() == theirs["reason"].tolist()
    cleaned = {split: pd.read_parquet(dask_run / "cleaned" / split) for split in ("train", "valid", "test")}
    assert len(cleaned["train"]) == stages["clean.4"]["report"]["train"]["rows_out"]
    assert sorted((dask_run / "cleaned" / "train").glob("part-*.parquet"))  # partitioned
    assert not (dask_run / "partitions").exists() or not any((dask_run / "partitions").rglob("part-*"))  # consumed
    assert dask_manifest["status"] == "succeeded" and "val_loss" in dask_manifest["metrics"]


def _plugin_site(tmp_path_factory) -> Path:
    source = '''
from forgeline.core import Cleaner, CleanResult, NoParams, hookimpl


class DropNegative(Cleaner):
    """Drop rows whose credit limit is negative (does not say it can run on partitions)."""

    name = "drop-negative"

    def fit(self, table, ctx=None):
        return self

    def apply(self, table, ctx=None):
        bad = (table.frame["income"] < 0).to_numpy()
        removed = table.frame[bad].copy()
        removed["reason"] = "income < 0"
        return CleanResult(table.take_mask(~bad), removed, flagged=removed.index.to_numpy())


class DropNegativeRows(DropNegative):
    """Drop rows whose credit limit is negative, on any partition."""

    name = "drop-negative-rows"
    partition_wise = True


@hookimpl
def forgeline_cleaners():
    return [DropNegative, DropNegativeRows]
'''
    root = tmp_path_factory.mktemp("dask-plugin")
    site = root / "site"
    pip_install_target(site, write_distribution(root, "forgeline-dask-demo", "0.1.0", "fl_dask_demo", source))
    return site


def test_validate_refuses_what_cannot_run_on_partitions(tmp_path_factory, tmp_path: Path) -> None:
    site = _plugin_site(tmp_path_factory)
    file = tmp_path / "p.yaml"
    file.write_text("name: p\ndata:\n  source: credit\n  with: {rows: 200}\n  engine: dask\n"
                    "  split: {method: random}\nclean:\n  - drop-negative\n  - drop-negative-rows\n"
                    "  - use: impute\n    with: {multiple: 3}\n  - use: dedup\n    with: {method: simhash}\n")
    r = run_cli("validate", str(file), site=site)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert any("clean.0" in ln and "'drop-negative' cannot run on engine dask" in ln and "partition_wise" in ln
               for ln in lines), r.stderr
    assert not any("clean.1" in ln for ln in lines), r.stderr  # declared partition_wise: accepted
    assert any("clean.2" in ln and "multiple imputation" in ln for ln in lines), r.stderr
    assert any("clean.3" in ln and "simhash" in ln for ln in lines), r.stderr
    assert any("data.split.method" in ln and "hash" in ln for ln in lines), r.stderr
    assert "Traceback" not in r.stderr
    # the partition-wise third-party cleaner runs for real on engine dask
    file.write_text("name: p\ndata:\n  source: credit\n  with: {rows: 300}\n  target: default\n  engine: dask\n"
                    "  dask: {processes: false}\nclean:\n  - drop-negative-rows\n")
    r = run_cli("run", str(file), "--out", str(tmp_path / "runs"), "--json", site=site, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((Path(json.loads(r.stdout)["run"]) / "manifest.json").read_text())
    report = next(s for s in manifest["stages"] if s["id"] == "clean.0")["report"]
    assert report["route"] == "partition_wise" and report["train"]["rows_in"] > 0


def test_cleaned_partitions_under_nproc_and_enough_worker_memory_or_a_clear_refusal(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("name: p\ndata:\n  source: credit\n  with: {rows: 200}\n  engine: dask\n")
    r = run_cli("run", str(file), "--nproc", "2", "--out", str(tmp_path / "runs"))  # no clean stage writes them
    assert r.returncode == 2 and "add a clean stage" in r.stderr and "--nproc 1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    r = run_cli("validate", str(file), "--set", "data.dask.memory_limit=100MiB")
    assert r.returncode == 2 and "data.dask.memory_limit" in r.stderr and "512MiB" in r.stderr, r.stderr
    r = run_cli("validate", str(file), "--set", "data.dask.memory_limit=lots")
    assert r.returncode == 2 and "not a size" in r.stderr, r.stderr
