"""Hostile and damaged input: YAML bombs, bad data, damaged run folders (issue 14).

Each is refused with a one-line error and exit 2 (or stated in the run record), never an
internal error and never a silent change."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import forgeline.core.api as fl
from forgeline.core import InputError
from forgeline.core.validation import load_plan

from conftest import run_cli


def billion_laughs(levels: int = 9) -> str:
    lines = ['name: lol', 'data: {source: wine}', 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def catalog():
    return fl.catalog()


def one_line_exit_2(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    return line


def test_a_nine_level_billion_laughs_file_is_refused_in_under_a_second(tmp_path, catalog) -> None:
    f = tmp_path / "lol.yaml"
    f.write_text(billion_laughs(9))
    start = time.perf_counter()
    with pytest.raises(InputError, match="aliases expand to"):
        load_plan(f, catalog)
    assert time.perf_counter() - start < 1.0
    line = one_line_exit_2(run_cli("validate", str(f)))
    assert "aliases expand to" in line and str(f) in line


def test_a_recursive_alias_and_a_huge_file_are_refused(tmp_path, catalog) -> None:
    f = tmp_path / "loop.yaml"
    f.write_text("name: x\ndata: {source: wine}\nclean: &c [*c]\n")
    with pytest.raises(InputError, match="recursive YAML alias"):
        load_plan(f, catalog)
    big = tmp_path / "big.yaml"
    big.write_text("name: x\ndata: {source: wine}\n" + "# padding\n" * 200_000)
    assert "the limit is" in one_line_exit_2(run_cli("validate", str(big)))


def test_a_few_aliases_still_work(tmp_path, catalog) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text("name: x\ndata: {source: wine}\nclean:\n  - {use: sigma-outliers, with: &w {k: 4}}\n"
                 "  - {use: sigma-outliers, with: *w}\n")
    plan = load_plan(f, catalog)
    assert [r.params.k for r in plan.clean] == [4, 4]


# --------------------------------------------------------------------------- bad data

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    import numpy as np
    import pandas as pd

    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    x = rng.normal(size=200).round(3).astype(object)
    x[[5, 17, 90]] = ["abc", "n/a?", "1,5"]
    pd.DataFrame({"x": x, "z": rng.normal(size=200), "y": rng.integers(0, 2, 200)}).to_csv(d / "mixed.csv", index=False)
    (d / "dup.csv").write_text("a,a,y\n" + "".join(f"{i},{2 * i},{i % 2}\n" for i in range(50)))
    pd.DataFrame({"x": rng.normal(size=50), "y": np.ones(50, int)}).to_csv(d / "one.csv", index=False)
    pd.DataFrame({"x": rng.normal(size=20), "l": [[1, 2]] * 20, "y": [0, 1] * 10}).to_parquet(d / "list.parquet")
    return d


def pipeline(folder: Path, source: str, extra: str = "") -> Path:
    f = folder / f"p-{source.replace('.', '-')}.yaml"
    f.write_text(f"name: t\ndata: {{source: ./{source}, target: y{extra}}}\nclean: [{{use: robust-scale}}]\n")
    return f


def test_a_number_column_with_stray_strings_is_an_error_naming_them(files, tmp_path) -> None:
    line = one_line_exit_2(run_cli("run", str(pipeline(files, "mixed.csv")), "--out", str(tmp_path), "-q"))
    assert "column 'x' holds numbers except 3 of 200 values ('abc', 'n/a?', '1,5')" in line
    assert "modality: numeric" in line


def test_declared_numeric_the_stray_cells_become_missing_and_are_counted(files, tmp_path) -> None:
    f = pipeline(files, "mixed.csv", ", columns: {x: {modality: numeric}}")
    r = run_cli("run", str(f), "--out", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    (manifest,) = tmp_path.glob("*/manifest.json")
    m = json.loads(manifest.read_text())
    data = m["stages"][0]["report"]
    assert data["coerced_to_numeric"]["x"]["cells_not_numbers"] == 3
    assert "x" in m["stages"][1]["report"]["details"]["center"]  # scaled as a number, not dropped as text


def test_duplicate_column_names_are_an_error(files, catalog) -> None:
    line = one_line_exit_2(run_cli("validate", str(pipeline(files, "dup.csv"))))
    assert "duplicate column names 'a'" in line
    import pandas as pd

    from forgeline.core import Table

    with pytest.raises(InputError, match="duplicate column names 'a'"):
        Table.from_frame(pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_a_target_with_one_class_is_an_error_at_the_data_stage(files, tmp_path) -> None:
    line = one_line_exit_2(run_cli("run", str(pipeline(files, "one.csv")), "--out", str(tmp_path), "-q"))
    assert "data.target" in line and "single value 1 " in line


def test_a_parquet_list_column_is_an_error(files) -> None:
    line = one_line_exit_2(run_cli("validate", str(pipeline(files, "list.parquet"))))
    assert "columns 'l' hold lists" in line


@pytest.mark.parametrize("out", ["below-a-file", "/sys/forgeline-runs"])
def test_an_out_folder_that_cannot_be_made_is_an_error(files, tmp_path, out) -> None:
    (tmp_path / "f").write_text("a file")
    where = str(tmp_path / "f" / "runs") if out == "below-a-file" else out
    line = one_line_exit_2(run_cli("run", str(pipeline(files, "mixed.csv")), "--out", where, "-q"))
    assert line.startswith("--out: cannot create the run folder") and "writable" in line


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    f = out / "p.yaml"
    f.write_text("name: w\ndata: {source: wine}\nclean:\n  - use: robust-scale\n")
    assert run_cli("run", str(f), "--out", str(out), "-q").returncode == 0
    from sklearn.datasets import load_wine

    load_wine(as_frame=True).frame.head(10).to_csv(out / "new.csv", index=False)
    (manifest,) = out.glob("*/manifest.json")
    return manifest.parent


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_a_corrupt_manifest_is_an_error(small_run, tmp_path) -> None:
    run = _copy(small_run, tmp_path)
    (run / "manifest.json").write_text('{"name": "w", "stages": [')
    for args in (["apply", str(run), str(small_run.parent / "new.csv"), "-o", str(tmp_path / "o.csv")],
                 ["run", "--resume", str(run), "-q"]):
        line = one_line_exit_2(run_cli(*args))
        assert "manifest.json: damaged manifest" in line


@pytest.mark.parametrize("name", ["state.json", "1.skops"])
def test_a_truncated_stage_file_is_an_error_naming_it(small_run, tmp_path, name) -> None:
    run = _copy(small_run, tmp_path)
    (f,) = (run / "stages").glob(f"*/{name}")
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    line = one_line_exit_2(run_cli("apply", str(run), str(small_run.parent / "new.csv"), "-o", str(tmp_path / "o.csv")))
    assert "clean.0-robust-scale/" in line and "rerun the pipeline" in line


# --------------------------------------------------------------------------- plugins not loaded

def test_a_disabled_plugin_is_named_when_its_component_is_unknown(tmp_path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("name: t\ndata: {source: wine}\nclean: [{use: robust-scale}]\n")
    for cmd in ("validate", "explain"):
        line = one_line_exit_2(run_cli(cmd, str(f), env={"FORGELINE_DISABLE_PLUGINS": "clean"}))
        assert "unknown cleaner 'robust-scale'" in line and "FORGELINE_DISABLE_PLUGINS=clean" in line


def test_a_broken_plugin_is_named_when_a_component_is_unknown(demo_site, tmp_path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("name: t\ndata: {source: wine}\nclean: [{use: licence-check}]\n")
    for args in (["validate", str(f)], ["explain", str(f)], ["run", str(f), "--out", str(tmp_path), "-q"]):
        line = one_line_exit_2(run_cli(*args, site=demo_site))
        assert "unknown cleaner 'licence-check'" in line
        assert "'cleaners' (forgeline-broken-demo 0.0.1) failed to load" in line and "licence server" in line
