"""The default strategy: one process, one device, no communication."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from forgeline.core import (
    DistInfo,
    InputError,
    ParallelStrategy,
    Params,
    PrecisionPolicy,
)
from pydantic import Field, field_validator

if TYPE_CHECKING:  # pragma: no cover
    import torch

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


class SingleParams(Params):
    device: str = Field("auto", description="where to train: auto (the first GPU when there is one, "
                        "else CPU), cpu, cuda, cuda:N, mps or xpu[:N]")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"unknown device {value!r}: use auto, cpu, cuda, cuda:N, mps, xpu or xpu:N")
        return value


class Single(ParallelStrategy):
    """One process on one device (the default); no gradient communication."""

    name = "single"
    Params = SingleParams

    def _device(self, dist: DistInfo | None = None) -> torch.device:
        import torch

        if self.params.device != "auto":
            return torch.device(self.params.device)
        if dist is not None and dist.device is not None:  # the training loop's own choice
            return torch.device(dist.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def unsupported(self, dist: DistInfo) -> str | None:
        if dist.world_size > 1:
            return (f"parallel strategy 'single' runs one process, the run has {dist.world_size}: "
                    "use ddp, fsdp or hybrid, or start without --nproc")
        import torch

        device = self._device(dist)
        available = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
                     "mps": lambda: torch.backends.mps.is_available(),
                     "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}[device.type]
        if not available():
            return f"parallel strategy 'single': device {str(device)!r} is not available on this machine"
        if device.type in ("cuda", "xpu") and device.index is not None:
            count = getattr(torch, device.type).device_count()
            if device.index >= count:
                return (f"parallel strategy 'single': device {str(device)!r} does not exist, "
                        f"this machine has {count} {device.type} device(s)")
        return None

    def setup(self, dist: DistInfo) -> None:
        problem = self.unsupported(dist)
        if problem:
            raise InputError(problem)
        self.device = self._device(dist)
        self.dist = replace(dist, device=self.device)

    def wrap(self, model: torch.nn.Module, precision: PrecisionPolicy) -> torch.nn.Module:
        return model.to(self.device)
