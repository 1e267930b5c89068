"""``bayes``: Gaussian-process Bayesian optimisation on scikit-optimize's ask/tell ``Optimizer``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from .space import SearchParams, SpaceTuner


class Bayes(SpaceTuner):
    """Bayesian optimisation: a Gaussian process over the space, points chosen by an acquisition function."""

    name = "bayes"

    class Params(SearchParams):
        acquisition: Literal["gp_hedge", "EI", "PI", "LCB"] = Field(
            "gp_hedge", description="acquisition function (gp_hedge picks among EI, PI and LCB as it goes)")
        initial_points: PositiveInt = Field(5, description="random points before the Gaussian process steers")
        estimator: Literal["GP", "RF", "ET"] = Field(
            "GP", description="surrogate model (skopt's GBRT is left out: it fails on scikit-learn >= 1.6)")

    def __init__(self, params: Any = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(params, seed, **kwargs)
        self._optimizer = None  # rebuilt from told_ (data) when first needed

    @property
    def optimizer(self) -> Any:
        if self._optimizer is None:
            from skopt import Optimizer

            p = self.params
            self._optimizer = Optimizer(self.space().dimensions, base_estimator=p.estimator,
                                        acq_func=p.acquisition, n_initial_points=p.initial_points,
                                        random_state=self.seed)
            if self.told_:
                self._optimizer.tell([x for x, _ in self.told_], [self._loss(s) for _, s in self.told_])
        return self._optimizer

    def _ask(self, n: int) -> list[list[Any]]:
        # several points at once use skopt's constant-liar strategy, so they differ
        return [self.optimizer.ask()] if n == 1 else self.optimizer.ask(n_points=n)

    def _told(self, point: list[Any], score: float) -> None:
        if self._optimizer is not None:
            self._optimizer.tell(point, self._loss(score))
