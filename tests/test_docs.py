"""Every hook is typed, documented in its spec, and described in docs/plugins.md."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import click
import pytest

from forgeline.core import components, hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec"))


def test_hookspecs_are_found():
    assert "forgeline_cleaners" in HOOKS and "forgeline_cli_commands" in HOOKS
    assert {k.hook for k in components.Kind} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_has_docstring_and_full_type_hints(name):
    fn = getattr(hookspecs, name)
    assert (fn.__doc__ or "").strip(), f"{name} has no docstring"
    hints = typing.get_type_hints(fn, globalns={**vars(components), **vars(hookspecs), "click": click})
    params = inspect.signature(fn).parameters
    missing = [p for p in params if p not in hints]
    assert not missing, f"{name}: parameters without a type hint: {missing}"
    assert "return" in hints, f"{name} has no return type hint"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_in_plugins_md(name):
    assert f"`{name}`" in DOCS.read_text(), f"{name} is not documented in docs/plugins.md"


def test_hooks_section_names_no_hook_that_does_not_exist():
    import re

    section = DOCS.read_text().split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(forgeline_[a-z_]+)`", section))
    assert set(HOOKS) <= named, "the Hooks section misses some hooks"
    assert named <= set(HOOKS), f"docs/plugins.md names unknown hooks: {sorted(named - set(HOOKS))}"
