"""Built-in precision policies: fp32, tf32, bf16 (autocast) and fp16 (autocast + dynamic loss scaling)."""

from __future__ import annotations

from forgeline.core import hookimpl

from .policies import BF16, FP16, FP32, TF32


@hookimpl
def forgeline_precision_policies():
    return [FP32, TF32, BF16, FP16]


__all__ = ["BF16", "FP16", "FP32", "TF32", "forgeline_precision_policies"]
