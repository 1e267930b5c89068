"""``forgeline new-plugin``: the scaffold installs, is found, and passes its own tests."""

from __future__ import annotations

import json
import tomllib

import pytest

from conftest import pip_install_target, run_cli, run_python


@pytest.mark.parametrize("kind, component", [
    ("cleaner", "drop-missing-target"), ("feature-transform", "log-skewed"), ("monitor", "csv-metrics")])
def test_scaffold_installs_is_listed_and_passes_its_own_tests(tmp_path, kind, component):
    name = f"probe-{kind}"
    proc = run_cli("new-plugin", name, "--dir", str(tmp_path), "--kind", kind)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / name
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"forgeline-{name}" and "forgeline" in project["dependencies"]
    package = "forgeline_" + name.replace("-", "_")
    assert project["entry-points"]["forgeline.plugins"] == {name: package}
    assert (root / "README.md").is_file() and (root / "tests" / "test_conformance.py").is_file()

    site = tmp_path / "site"
    pip_install_target(site, root)
    rows = json.loads(run_cli("plugins", "list", "--json", "--kind", kind, site=site).stdout)
    mine = [r for r in rows if r["distribution"] == f"forgeline-{name}"]
    assert [(r["name"], r["version"]) for r in mine] == [(component, "0.1.0")] and mine[0]["summary"]

    tests = run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", site=site, cwd=root, timeout=300)
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout and "skipped" not in tests.stdout


def test_rejects_a_name_that_is_not_kebab_case(tmp_path):
    proc = run_cli("new-plugin", "My_Plugin", "--dir", str(tmp_path))
    assert proc.returncode == 2 and "kebab-case" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_rejects_an_existing_folder_and_leaves_it_alone(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    proc = run_cli("new-plugin", "taken", "--dir", str(tmp_path))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_rejects_a_kind_without_a_template(tmp_path):
    proc = run_cli("new-plugin", "probe", "--dir", str(tmp_path), "--kind", "tuner")
    assert proc.returncode == 2 and "cleaner, feature-transform, monitor" in proc.stderr


def test_help_lists_every_kind_with_a_template():
    from forgeline.registry.scaffold import EXAMPLES

    help_text = " ".join(run_cli("new-plugin", "--help").stdout.split())
    assert all(str(kind) in help_text for kind in EXAMPLES)
