"""``forgeline plugins list|show`` through the real CLI, with real third-party distributions."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import run_cli, run_python

HEAVY = ("torch", "pandas", "sklearn", "scipy", "shap", "umap", "albumentations", "nlpaug", "tsaug")


def _list_json(site, env=None):
    proc = run_cli("plugins", "list", "--json", site=site, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_good_plugin_is_listed_and_its_component_runs(demo_site):
    rows, _ = _list_json(demo_site, env={"FORGELINE_DISABLE_PLUGINS": "forgeline-clash-demo"})
    assert {"kind": "cleaner", "name": "drop-negative", "distribution": "forgeline-good-demo",
            "version": "1.2.3", "summary": "Drop rows whose value in a column is negative."} in rows
    assert any(r["distribution"] == "forgeline" for r in rows), "built-ins vanished next to a third-party plugin"
    snippet = textwrap.dedent("""
        import pandas as pd
        from forgeline.core import Kind, Table
        from forgeline.registry import build_catalog
        cls = build_catalog().get(Kind.CLEANER, "forgeline-good-demo:drop-negative").cls
        table = Table.from_frame(pd.DataFrame({"x1": [1.0, -2.0, 3.0], "y": [0, 1, 0]}), target="y")
        result = cls().fit_apply(table)
        print(result.table.row_ids.tolist(), result.removed.index.tolist(), result.removed["reason"].iloc[0])
        """)
    proc = run_python("-c", snippet, site=demo_site)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 2] [1] x1 < 0"


def test_broken_plugins_are_reported_and_the_rest_still_works(demo_site):
    rows, stderr = _list_json(demo_site)
    assert isinstance(rows, list) and all(set(r) == {"kind", "name", "distribution", "version", "summary"} for r in rows)
    broken_lines = [line for line in stderr.splitlines() if line.startswith("broken plugin")]
    assert any("forgeline-broken-demo" in line and "RuntimeError: boom: licence server unreachable" in line
               for line in broken_lines), stderr
    assert any("forgeline-misspelled-demo" in line and "forgeline_cleanerz" in line for line in broken_lines)
    assert any(r["name"] == "keep-all" for r in rows), "a plugin's valid component must survive its invalid one"

    table = run_cli("plugins", "list", site=demo_site)
    assert table.returncode == 0, table.stderr
    out = " ".join(table.stdout.split())
    assert "forgeline-broken-demo" in out and "boom" in out and "drop-negative" in out


def test_strict_exits_2_naming_the_broken_distribution(demo_site):
    proc = run_cli("--strict", "plugins", "list", site=demo_site)
    assert proc.returncode == 2
    assert "forgeline-broken-demo" in proc.stderr and "Traceback" not in proc.stderr


def test_disable_plugins_blocks_them_before_import(demo_site):
    env = {"FORGELINE_DISABLE_PLUGINS": "forgeline-broken-demo,forgeline-misspelled-demo,forgeline-mixed-demo"}
    proc = run_cli("--strict", "plugins", "list", "--json", site=demo_site, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "broken" not in proc.stderr


def test_clash_names_both_distributions_and_provider_name_resolves(demo_site):
    proc = run_cli("plugins", "show", "drop-negative", site=demo_site)
    assert proc.returncode == 2
    assert "forgeline-clash-demo" in proc.stderr and "forgeline-good-demo" in proc.stderr
    proc = run_cli("plugins", "show", "forgeline-clash-demo:drop-negative", "--json", site=demo_site)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["distribution"], info["version"], info["kind"]) == ("forgeline-clash-demo", "0.4.0", "cleaner")
    assert info["params"] == [{"name": "column", "type": "str", "default": "x1", "required": False,
                               "description": "column whose negative values are dropped"}]


def test_show_prints_parameters_and_suggests_close_names(demo_site):
    proc = run_cli("plugins", "show", "forgeline-good-demo:drop-negative", site=demo_site)
    assert proc.returncode == 0, proc.stderr
    for text in ("drop-negative", "cleaner", "forgeline-good-demo", "1.2.3", "column", "'x1'",
                 "column whose negative values are dropped"):
        assert text in proc.stdout
    proc = run_cli("plugins", "show", "drop-negativ", "--kind", "cleaner", site=demo_site)
    assert proc.returncode == 2 and "drop-negative" in proc.stderr


def test_list_filters_by_kind(demo_site):
    proc = run_cli("plugins", "list", "--kind", "cleaner", "--json", site=demo_site)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and {r["kind"] for r in rows} == {"cleaner"}


@pytest.mark.parametrize("args", [["--help"], ["plugins", "list"]])
def test_start_up_imports_no_heavy_library(args):
    probe = textwrap.dedent(f"""
        import sys
        sys.argv = ["forgeline", *{args!r}]
        from forgeline.core.cli import main
        try:
            main()
        except SystemExit:
            pass
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print("HEAVY=" + ",".join(heavy), file=sys.stderr)
        """)
    proc = run_python("-c", probe)
    assert "HEAVY=" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY=", proc.stderr
