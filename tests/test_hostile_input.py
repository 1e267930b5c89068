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
