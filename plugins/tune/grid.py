"""``grid``: every combination of a few values per dimension, in order."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from pydantic import Field, PositiveInt

from .space import Dimension, SearchParams, SpaceTuner


def grid_values(dim: Dimension, points: int) -> list[Any]:
    """``points`` values spread over a range (log-spaced for log-uniform), or every choice."""
    if dim.categorical is not None:
        return list(dim.categorical)
    low, high = dim.real if dim.real is not None else dim.int_
    spread = np.geomspace if dim.prior == "log-uniform" else np.linspace
    values = spread(low, high, points)
    if dim.int_ is not None:
        return sorted({int(round(v)) for v in values})
    return [float(v) for v in values]


class Grid(SpaceTuner):
    """Grid search: the product of evenly spread values per dimension, tried in order."""

    name = "grid"

    class Params(SearchParams):
        points: PositiveInt = Field(3, description="values per real or integer dimension")
        trials: PositiveInt | None = Field(None, description="trials to run (None: the whole grid)")

    @property
    def grid(self) -> list[tuple[Any, ...]]:
        values = [grid_values(d, self.params.points) for d in self.params.space.values()]
        return list(itertools.product(*values))

    @property
    def trials(self) -> int:
        size = len(self.grid)
        return min(self.params.trials, size) if self.params.trials else size

    def _ask(self, n: int) -> list[list[Any]]:
        start = len(self.told_) + self._pending
        grid = self.grid
        return [list(grid[i % len(grid)]) for i in range(start, start + n)]
