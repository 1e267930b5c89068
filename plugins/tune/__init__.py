"""Built-in tuners: ``bayes`` (scikit-optimize), ``random`` and ``grid``.

scikit-optimize is imported only when a tuner first asks for a point.
"""

from __future__ import annotations

from forgeline.core import Tuner, hookimpl

from .bayes import Bayes
from .grid import Grid
from .random import Random

__all__ = ["Bayes", "Grid", "Random"]


@hookimpl
def forgeline_tuners() -> list[type[Tuner]]:
    return [Bayes, Random, Grid]
