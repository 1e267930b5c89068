"""The CLI's commands, grouped by what they work on, and the context they share.

The context lives here, not in ``core/cli.py``, so that command modules never import the CLI
module (``python -m forgeline.core.cli`` would otherwise load it twice, as ``__main__`` and by
name, with two ``Context`` classes).
"""

from __future__ import annotations

import click


class Context:
    """Shared by all commands: the catalog, built once, on first use."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self._catalog = None

    @property
    def catalog(self):
        if self._catalog is None:
            from ...registry import build_catalog  # a composition root (core/api.py is the other)
            self._catalog = build_catalog(strict=self.strict)
        return self._catalog


pass_context = click.make_pass_decorator(Context, ensure=True)
