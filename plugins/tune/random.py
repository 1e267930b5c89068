"""``random``: independent draws from the search space (the baseline every tuner must beat)."""

from __future__ import annotations

from typing import Any

from .space import SpaceTuner


class Random(SpaceTuner):
    """Random search: each trial an independent draw from the space's priors."""

    name = "random"

    def _ask(self, n: int) -> list[list[Any]]:
        # trial i draws with its own seed, so a resumed study continues the same sequence
        # (skopt's dummy_minimize would do this but fails on scikit-learn >= 1.6)
        start = len(self.told_) + self._pending
        space = self.space()
        return [space.rvs(1, random_state=self.seed * 100_003 + i)[0] for i in range(start, start + n)]
