"""``qat-int8``: quantisation-aware training to INT8, converted to modules that run INT8 kernels.

Uses PyTorch's FX graph-mode QAT (``torch.ao.quantization.quantize_fx``) with the x86
backend (fbgemm + oneDNN kernels). torchao's PT2E flow was measured on the same 2-core x86
CPU and 7-layer CNN (batch 64, 32x32): its converted graph runs reference quantise/dequantise
ops in eager mode (about 10x slower than fp32) and needs ``torch.compile`` (140 s to compile
here) to reach INT8 kernels, and was then still 2x slower than this FX flow
(docs/architecture.md has the figures).

The fake-quantised model the training saw is kept beside the converted one, so a later
compressor that trains (``distill``) continues QAT and converts again (:func:`trainable`).
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from forgeline.core import CompressContext, Compressor, Params

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: converted INT8 model -> (its QAT-prepared float model, the backend): what training can still change
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trainable(model: nn.Module) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
    """A model a compressor can train, and how to turn the trained one back into its final form:
    for an INT8 model from ``qat-int8``, its fake-quantised form and a fresh conversion."""
    if model in _PREPARED:
        prepared, backend = _PREPARED[model]
        return prepared, lambda trained: convert(trained, backend)
    return model, lambda trained: trained


def convert(prepared: nn.Module, backend: str) -> nn.Module:
    import torch
    from torch.ao.quantization.quantize_fx import convert_fx

    torch.backends.quantized.engine = backend
    quantised = convert_fx(copy.deepcopy(prepared).cpu().eval())
    _PREPARED[quantised] = (prepared, backend)
    return quantised


def int8_modules(model: nn.Module) -> list[str]:
    """Names of the modules that run quantised kernels."""
    return [name for name, m in model.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]


class QatInt8(Compressor):
    """Quantisation-aware training to INT8 (FX graph mode, x86 kernels), then conversion."""

    name = "qat-int8"

    class Params(Params):
        epochs: int = Field(1, ge=0, description="QAT fine-tuning epochs (fake-quantised)")
        backend: Literal["x86", "fbgemm", "onednn"] = Field("x86", description="quantised kernel backend")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.int8_modules_: list[str] = []

    def compress(self, model: nn.Module, ctx: CompressContext) -> nn.Module:
        import torch
        from torch.ao.quantization import get_default_qat_qconfig_mapping
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        backend = self.params.backend
        torch.backends.quantized.engine = backend
        model = copy.deepcopy(model).cpu().train()
        # prepare_qat_fx folds conv-bn(-relu) into QAT modules and inserts fake-quant observers
        with warnings.catch_warnings():  # torch.ao's own deprecation notices, once per observer
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao")
            prepared = prepare_qat_fx(model, get_default_qat_qconfig_mapping(backend), (ctx.example_inputs.cpu(),))
            if self.params.epochs:
                prepared = ctx.fit(prepared, self.params.epochs)
            quantised = convert(prepared, backend)
        self.int8_modules_ = int8_modules(quantised)
        if not self.int8_modules_:
            raise RuntimeError("qat-int8: no layer was converted to an INT8 module (nothing quantisable was found)")
        return quantised

    def report(self) -> dict[str, Any]:
        return {"backend": self.params.backend, "int8_modules": len(self.int8_modules_)}
