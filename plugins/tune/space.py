"""The search space of a tuner: one dimension per dotted pipeline path, and the shared base.

A dimension is written as ``{real: [low, high], prior: log-uniform}``, ``{int: [low, high]}``
or ``{categorical: [a, b, c]}``. The paths themselves are checked against the pipeline model
when the file is validated (``tune.with.space.<path>``); the bounds and priors here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from forgeline.core import Params, Tuner

if TYPE_CHECKING:  # pragma: no cover
    from skopt.space import Space

Scalar = bool | int | float | str


class Dimension(BaseModel):
    """One searched value: a real or integer range, or a list of choices."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    real: tuple[float, float] | None = Field(None, description="[low, high] of a real value")
    int_: tuple[int, int] | None = Field(None, alias="int", description="[low, high] of an integer, both included")
    categorical: list[Scalar] | None = Field(None, min_length=1, description="the choices")
    prior: Literal["uniform", "log-uniform"] = Field("uniform", description="how values are spread over the range")

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        given = [k for k in ("real", "int_", "categorical") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of real: [low, high], int: [low, high] or categorical: [choices]")
        bounds = self.real if self.real is not None else self.int_
        if bounds is not None:
            low, high = bounds
            if not low < high:
                raise ValueError(f"low must be below high, got [{low}, {high}]")
            if self.prior == "log-uniform" and low <= 0:
                raise ValueError(f"a log-uniform range must be positive, got low {low}")
        elif self.prior != "uniform":
            raise ValueError("prior applies to real and int ranges, not to categorical choices")
        return self

    def skopt(self, name: str) -> Any:
        from skopt.space import Categorical, Integer, Real

        if self.real is not None:
            return Real(*self.real, prior=self.prior, name=name)
        if self.int_ is not None:
            return Integer(*self.int_, prior=self.prior, name=name)
        return Categorical(list(self.categorical), name=name)


class SearchParams(Params):
    trials: PositiveInt = Field(20, description="training runs to try (the final training comes on top)")
    metric: str = Field("val_loss", description="validation metric to optimise (val_loss, val_accuracy, val_auc, ...)")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="auto: minimise losses and errors (loss, rmse, mae), maximise the rest")
    space: dict[str, Dimension] = Field(min_length=1, description="dotted pipeline path -> dimension, e.g. "
                                        "train.optimizer.lr: {real: [1.0e-5, 1.0e-2], prior: log-uniform}")
    parallel: PositiveInt = Field(1, description="points asked at once (a batch of trials)")
    prune: bool = Field(True, description="median rule: stop a trial whose metric at an epoch is worse than the "
                        "median of finished trials at that epoch")
    prune_after: int = Field(1, ge=0, description="epochs every trial runs before the median rule applies")
    min_finished: PositiveInt = Field(3, description="finished trials needed before the median rule applies")


def as_python(value: Any) -> Scalar:
    """numpy scalars (what skopt returns) as plain Python values, for YAML, JSON and SQLite."""
    return value.item() if hasattr(value, "item") else value


class SpaceTuner(Tuner):
    """Base of the built-in tuners: a search space, an objective, and the trials told so far.

    ``told_`` (the fitted state, plain data) holds ``[values, score]`` pairs in telling order;
    a resumed study re-tells its finished trials, which rebuilds everything else.
    """

    Params = SearchParams

    def __init__(self, params: Any = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.seed = seed
        self.told_: list[list[Any]] = []
        self._pending = 0  # asked, not told yet

    @property
    def trials(self) -> int:
        return self.params.trials

    @property
    def metric(self) -> str:
        return self.params.metric

    @property
    def maximize(self) -> bool:
        if self.params.direction != "auto":
            return self.params.direction == "maximize"
        return not any(w in self.params.metric for w in ("loss", "rmse", "mae", "error"))

    @property
    def names(self) -> list[str]:
        return list(self.params.space)

    def space(self) -> Space:
        from skopt.space import Space

        return Space([d.skopt(n) for n, d in self.params.space.items()])

    def ask(self) -> dict[str, Any]:
        return self.ask_batch(1)[0]

    def ask_batch(self, n: int) -> list[dict[str, Any]]:
        points = self._ask(n)
        self._pending += len(points)
        return [dict(zip(self.names, map(as_python, p))) for p in points]

    def tell(self, values: Mapping[str, Any], score: float) -> None:
        self._pending = max(0, self._pending - 1)
        self.told_.append([[as_python(values[n]) for n in self.names], float(score)])
        self._told(self.told_[-1][0], float(score))

    def _loss(self, score: float) -> float:
        """skopt minimises."""
        return -score if self.maximize else score

    def _ask(self, n: int) -> list[list[Any]]:
        raise NotImplementedError

    def _told(self, point: list[Any], score: float) -> None:
        pass
