"""Built-in parallel strategies: single device, DDP, FSDP2 and a hybrid 2-D (data x tensor) mesh."""

from __future__ import annotations

from forgeline.core import hookimpl

from .ddp import DDP
from .fsdp import FSDP
from .hybrid import Hybrid
from .single import Single


@hookimpl
def forgeline_parallel_strategies():
    return [Single, DDP, FSDP, Hybrid]


__all__ = ["DDP", "FSDP", "Hybrid", "Single", "forgeline_parallel_strategies"]
