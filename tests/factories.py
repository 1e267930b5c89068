"""A user's own ``nn.Module`` factory, as the ``module`` model imports it (``factories:small_net``)."""

from __future__ import annotations

import math


def small_net(spec, hidden: int = 8):
    """Flatten, one hidden layer, one output per class (or one for regression)."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(spec.input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, spec.n_outputs))
