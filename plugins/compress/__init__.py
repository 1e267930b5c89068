"""Built-in compressors: ``prune`` (torch-pruning), ``qat-int8`` (FX QAT, x86 INT8) and ``distill``.

torch and torch-pruning are imported only when a compressor runs.
"""

from __future__ import annotations

from forgeline.core import Compressor, hookimpl

from .distill import Distill
from .prune import Prune
from .qat import QatInt8

__all__ = ["Distill", "Prune", "QatInt8"]


@hookimpl
def forgeline_compressors() -> list[type[Compressor]]:
    return [Prune, QatInt8, Distill]
