"""The built-in precision policies, on torch's own ``autocast`` and ``GradScaler``.

torch is imported inside methods only, so listing plugins stays cheap. ``fp8`` is not
offered: torch's float8 training path (``torch._scaled_mm``) needs float8 tensor-core
hardware (compute capability >= 8.9) that this project cannot test.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Mapping

from forgeline.core import NoParams, Params, PrecisionPolicy
from pydantic import Field

if TYPE_CHECKING:  # pragma: no cover
    import torch


class _Autocast(PrecisionPolicy):
    """Shared autocast handling; subclasses name the dtype."""

    _dtype_name: str = ""

    @property
    def compute_dtype(self) -> torch.dtype | None:
        import torch

        return getattr(torch, self._dtype_name)

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self._device_type = device.type

    def autocast(self) -> AbstractContextManager:
        import torch

        return torch.autocast(device_type=self._device_type, dtype=self.compute_dtype)


class FP32(PrecisionPolicy):
    """Full float32 training: no autocast, no loss scaling."""

    name = "fp32"
    Params = NoParams


class TF32Params(Params):
    matmul: bool = Field(True, description="TensorFloat-32 for float32 matrix multiplications (cuBLAS)")
    cudnn: bool = Field(True, description="TensorFloat-32 for float32 convolutions (cuDNN)")


class TF32(PrecisionPolicy):
    """float32 weights and activations with TensorFloat-32 tensor-core math on CUDA (Ampere+).

    TF32 is a CUDA tensor-core mode: on a CPU, or a GPU older than Ampere, it would silently
    be plain fp32, so it is reported as unsupported there (use ``fp32``). The global switches
    are restored by ``teardown``.
    """

    name = "tf32"
    Params = TF32Params

    def unsupported(self, device: torch.device) -> str | None:
        import torch

        if device.type != "cuda":
            return f"tf32 is a CUDA tensor-core mode and has no effect on {device.type}; use fp32"
        major, _ = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"tf32 needs an Ampere or newer GPU (compute capability >= 8.0), {torch.cuda.get_device_name(device)} has {major}.x; use fp32"
        return None

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self._saved = _tf32_switches()
        _set_tf32_switches(matmul="tf32" if self.params.matmul else "ieee",
                           conv="tf32" if self.params.cudnn else "ieee")

    def teardown(self) -> None:
        saved = getattr(self, "_saved", None)
        if saved is not None:
            _set_tf32_switches(**saved)
            self._saved = None


def _tf32_switches() -> dict[str, str]:
    """The current float32 precision of CUDA matmuls and cuDNN convolutions."""
    import torch

    # torch >= 2.9 has the fp32_precision API and deprecates allow_tf32; support both
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return {"matmul": torch.backends.cuda.matmul.fp32_precision,
                "conv": torch.backends.cudnn.conv.fp32_precision}
    return {"matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
            "conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"}


def _set_tf32_switches(matmul: str, conv: str) -> None:
    import torch

    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
        torch.backends.cudnn.allow_tf32 = conv == "tf32"


class BF16(_Autocast):
    """bfloat16 autocast: float32 weights, bfloat16 matmuls and convolutions, no loss scaling."""

    name = "bf16"
    Params = NoParams
    _dtype_name = "bfloat16"

    def unsupported(self, device: torch.device) -> str | None:
        import torch

        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return (f"bf16 is not supported by {torch.cuda.get_device_name(device)} "
                    "(needs compute capability >= 8.0); use fp16")
        return None


class FP16Params(Params):
    init_scale: float = Field(2.0 ** 15, gt=0, description="initial loss scale")
    growth_factor: float = Field(2.0, gt=1, description="scale multiplier after growth_interval clean steps")
    backoff_factor: float = Field(0.5, gt=0, lt=1, description="scale multiplier after an inf/NaN gradient")
    growth_interval: int = Field(2000, ge=1, description="consecutive clean steps before the scale grows")


class FP16(_Autocast):
    """float16 autocast with dynamic loss scaling (torch.amp.GradScaler); overflowing steps are skipped.

    A step whose gradients hold inf/NaN (past fp16's 65504) is skipped and the scale is
    multiplied by ``backoff_factor``; after ``growth_interval`` clean steps it grows by
    ``growth_factor``. ``metrics()`` reports ``loss_scale`` and ``skipped_steps``.
    """

    name = "fp16"
    Params = FP16Params
    _dtype_name = "float16"

    def setup(self, device: torch.device) -> None:
        import torch

        super().setup(device)
        p = self.params
        self.scaler = torch.amp.GradScaler(device.type, init_scale=p.init_scale, growth_factor=p.growth_factor,
                                           backoff_factor=p.backoff_factor, growth_interval=p.growth_interval)
        self.skipped_steps = 0
        self._unscaled = False
        pending = getattr(self, "_pending_state", None)
        if pending is not None:
            self._pending_state = None
            self.load_state_dict(pending)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.unscale_(optimizer)
        self._unscaled = True

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        if not self._unscaled:
            self.scaler.unscale_(optimizer)
        self._unscaled = False
        # GradScaler.step syncs on the found-inf flags anyway but does not say whether it
        # stepped; read the same per-device flags it just filled in (no extra device work).
        found_inf = self.scaler._found_inf_per_device(optimizer)
        skipped = any(bool(v.item()) for v in found_inf.values())
        self.scaler.step(optimizer)
        self.scaler.update()
        if skipped:
            self.skipped_steps += 1
        return not skipped

    def metrics(self) -> dict[str, float]:
        return {"loss_scale": float(self.scaler.get_scale()), "skipped_steps": float(self.skipped_steps)}

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not hasattr(self, "scaler"):  # restored before setup: apply once the scaler exists
            self._pending_state = dict(state)
            return
        self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
