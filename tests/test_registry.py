"""The loading loop and catalog, in-process, over real installed demo distributions."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from forgeline.core import Cleaner, InputError, Kind, LookupProblem
from forgeline.registry import build_catalog, component_problem, disabled_plugins, make_plugin_manager


def _entry_points(site: Path, *dists: str):
    eps = []
    for dist in metadata.distributions(path=[str(site)]):
        if not dists or dist.metadata["Name"] in dists:
            eps.extend(dist.entry_points.select(group="forgeline.plugins"))
    return eps


@pytest.fixture
def site(demo_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(demo_site))
    monkeypatch.delenv("FORGELINE_DISABLE_PLUGINS", raising=False)
    return demo_site


def test_plugin_manager_is_built_fresh_with_the_hookspecs():
    a, b = make_plugin_manager(), make_plugin_manager()
    assert a is not b
    assert a.hook.forgeline_cleaners.has_spec() and a.hook.forgeline_run_started.has_spec()
    assert not a.get_plugins()


def test_good_plugin_registers_with_its_distribution_and_version(site):
    catalog = build_catalog(entry_points=_entry_points(site, "forgeline-good-demo"))
    entry = catalog.get(Kind.CLEANER, "drop-negative")
    assert (entry.distribution, entry.version, entry.plugin) == ("forgeline-good-demo", "1.2.3", "cleaners")
    assert entry.summary == "Drop rows whose value in a column is negative."
    assert not catalog.broken
    assert catalog.hook is not None and catalog.hook.forgeline_run_started.has_spec()


def test_import_failure_is_a_broken_entry_and_the_rest_still_loads(site):
    catalog = build_catalog(entry_points=_entry_points(site, "forgeline-good-demo", "forgeline-broken-demo"))
    assert [b.distribution for b in catalog.broken] == ["forgeline-broken-demo"]
    broken = catalog.broken[0]
    assert broken.error == "RuntimeError: boom: licence server unreachable"
    assert (broken.plugin, broken.version) == ("cleaners", "0.0.1")
    assert catalog.get(Kind.CLEANER, "drop-negative").distribution == "forgeline-good-demo"


def test_strict_raises_naming_the_distribution(site):
    with pytest.raises(InputError, match="forgeline-broken-demo"):
        build_catalog(strict=True, entry_points=_entry_points(site, "forgeline-broken-demo"))


def test_misspelled_hook_makes_the_plugin_broken(site):
    catalog = build_catalog(entry_points=_entry_points(site, "forgeline-misspelled-demo"))
    assert len(catalog.broken) == 1
    assert "forgeline_cleanerz" in catalog.broken[0].error
    assert catalog.broken[0].distribution == "forgeline-misspelled-demo"


def test_bad_components_are_attributed_and_good_ones_still_register(site):
    catalog = build_catalog(entry_points=_entry_points(site, "forgeline-mixed-demo"))
    assert [e.name for e in catalog] == ["keep-all"]
    errors = [b.error for b in catalog.broken]
    assert all(b.distribution == "forgeline-mixed-demo" for b in catalog.broken)
    assert any("Bad_Name" in e and "kebab-case" in e for e in errors)
    assert any(e.startswith("DuplicateComponent") and "keep-all" in e for e in errors)
    assert any("model registry offline" in e and "forgeline_models" in e for e in errors)
    assert len(errors) == 3


def test_same_name_from_two_distributions_is_kept_and_reported(site):
    catalog = build_catalog(entry_points=_entry_points(site, "forgeline-good-demo", "forgeline-clash-demo"))
    assert sorted(e.distribution for e in catalog.of_kind(Kind.CLEANER)) == [
        "forgeline-clash-demo", "forgeline-good-demo"]
    with pytest.raises(LookupProblem, match="forgeline-clash-demo and forgeline-good-demo"):
        catalog.get(Kind.CLEANER, "drop-negative")
    assert catalog.get(Kind.CLEANER, "forgeline-clash-demo:drop-negative").version == "0.4.0"


@pytest.mark.parametrize("blocked", ["forgeline-broken-demo", "cleaners"])
def test_disabled_plugins_are_not_even_imported(site, monkeypatch, blocked):
    monkeypatch.setenv("FORGELINE_DISABLE_PLUGINS", f" other ,{blocked}")
    catalog = build_catalog(entry_points=_entry_points(site, "forgeline-broken-demo"))
    assert not catalog.broken and not catalog.entries


def test_disabled_plugins_parsing():
    assert disabled_plugins({"FORGELINE_DISABLE_PLUGINS": "a, b,,c "}) == {"a", "b", "c"}
    assert disabled_plugins({}) == set()


def test_component_problem_explains_each_rule():
    class NoDoc(Cleaner):
        name = "no-doc"

    class Fine(Cleaner):
        """Fine."""

        name = "fine"

    assert component_problem(Kind.CLEANER, Fine) is None
    assert "not a class" in component_problem(Kind.CLEANER, "fine")
    assert "not a subclass of Model" in component_problem(Kind.MODEL, Fine)
    assert "docstring" in component_problem(Kind.CLEANER, NoDoc)


def test_builtins_register_under_the_forgeline_distribution():
    catalog = build_catalog()
    version = metadata.version("forgeline")
    builtins = [e for e in catalog if e.distribution == "forgeline"]
    assert builtins, "the forgeline distribution registers no component"
    assert not [b for b in catalog.broken if b.distribution == "forgeline"], catalog.broken
    assert all(e.version == version for e in builtins)
