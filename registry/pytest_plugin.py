"""pytest fixtures for plugin authors (loaded through the ``pytest11`` entry point ``forgeline``).

``forgeline_table``: a small dirty table (numeric, categorical, text, binary target);
``forgeline_table_factory``: the same with options (rows, seed, modalities, first row id);
``forgeline_stage_context``: a standalone :class:`~forgeline.core.StageContext` with seed 0;
``forgeline_catalog``: the catalog of every installed plugin, built once per session.

Importing this module must stay cheap: it is loaded by every pytest run in an environment
where forgeline is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from forgeline.core import Catalog, StageContext, Table


@pytest.fixture
def forgeline_table_factory() -> Callable[..., Table]:
    """``make_table(n_rows=60, seed=0, modalities=(), first_id=0)`` of the conformance kit."""
    from .conformance import make_table

    return make_table


@pytest.fixture
def forgeline_table(forgeline_table_factory: Callable[..., Table]) -> Table:
    """60 rows: numeric, categorical and text features, a binary target, a few faults."""
    return forgeline_table_factory()


@pytest.fixture
def forgeline_stage_context() -> StageContext:
    """A standalone stage context with seed 0 (no run folder)."""
    from forgeline.core import StageContext

    return StageContext.standalone(seed=0)


@pytest.fixture(scope="session")
def forgeline_catalog() -> Catalog:
    """Every installed plugin's components, discovered once per test session."""
    from . import build_catalog

    return build_catalog()
