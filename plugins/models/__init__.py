"""Built-in models: ``mlp`` (tables), ``cnn`` (images), ``gru`` and ``tcn`` (time series),
``text-classifier`` (text) and ``module`` (a user's own ``nn.Module`` factory).

torch is imported only when a model encodes data or builds its module.
"""

from __future__ import annotations

from forgeline.core import Model, hookimpl

from .cnn import CNN
from .custom import CustomModule
from .mlp import MLP
from .sequence import GRU, TCN
from .text import TextClassifier

__all__ = ["CNN", "GRU", "MLP", "TCN", "CustomModule", "TextClassifier"]


@hookimpl
def forgeline_models() -> list[type[Model]]:
    return [MLP, CNN, GRU, TCN, TextClassifier, CustomModule]
