"""``defect-net``: a small CNN defect detector, evaluated as it would be deployed.

The network (conv-BN-ReLU blocks, global average pooling, a linear head) carries quantisation
stubs, so the same module converts to INT8 with PyTorch's eager static quantisation on CPU
(``torch.ao.quantization``: fuse conv-BN-ReLU, calibrate observers on held-out images,
convert; x86/fbgemm kernels). ``evaluate`` (called by the core on the held-out split) reports:

- ``detection_rate`` (defective images flagged / defective images) and ``false_alarm_rate``
  (good images flagged / good images) at ``threshold`` on the defect probability, for the
  float32 model and (``int8_``-prefixed) the INT8 one;
- batch-1 latency p50/p95 in ms and throughput (images/s) of the TorchScript exports
  (``model.ts``, ``model-int8.ts`` in the stage's artifacts folder, loadable without Python
  code via ``torch.jit.load``).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, PositiveInt

from forgeline.core import DataSpec, InputError, Model, Modality, Params, StageContext, Table

if TYPE_CHECKING:  # pragma: no cover
    import torch


def make_net(in_channels: int, n_outputs: int, channels: list[int]) -> torch.nn.Module:
    import torch
    from torch import nn
    from torch.ao import quantization as q

    class SurfaceNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant, self.dequant = q.QuantStub(), q.DeQuantStub()
            blocks, width = [], in_channels
            for i, c in enumerate(channels):
                blocks.append(nn.Sequential(nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                            nn.ReLU(), nn.MaxPool2d(2) if i < len(channels) - 1 else nn.Identity()))
                width = c
            self.blocks = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(width, n_outputs)
            self.width = width

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            """The pooled feature vector (N x width): few-shot prototypes are built on it."""
            return torch.flatten(self.pool(self.blocks(self.quant(x))), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dequant(self.head(self.embed(x)))

        def fuse(self) -> None:
            for block in self.blocks:
                q.fuse_modules(block, [["0", "1", "2"]], inplace=True)

    return SurfaceNet()


def quantize_int8(module: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """An INT8 copy of a ``make_net`` module (eager static quantisation, x86 backend)."""
    import copy

    import torch
    from torch.ao import quantization as q

    int8 = copy.deepcopy(module).cpu().eval()
    int8.fuse()
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    int8.qconfig = q.get_default_qconfig(torch.backends.quantized.engine)
    with warnings.catch_warnings():  # eager-mode quantisation is deprecated upstream, still the CPU path here
        warnings.simplefilter("ignore")
        q.prepare(int8, inplace=True)
        with torch.no_grad():
            for start in range(0, len(calibration), 64):
                int8(calibration[start:start + 64])
        return q.convert(int8, inplace=False)


def latency(module: Any, sample: torch.Tensor, warmup: int = 5, repeats: int = 50) -> dict[str, float]:
    """Batch-1 latency (p50/p95 ms) and throughput (images/s) on the CPU."""
    import torch

    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            module(sample)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    return {"latency_b1_p50_ms": float(np.percentile(t, 50) * 1e3), "latency_b1_p95_ms": float(np.percentile(t, 95) * 1e3),
            "throughput_b1_per_s": float(1.0 / t.mean())}


class DefectNet(Model):
    """Small CNN defect detector; reports detection/false-alarm rates and INT8 TorchScript latency."""

    name = "defect-net"
    modalities = frozenset({Modality.IMAGE})

    class Params(Params):
        column: str | None = Field(None, description="the image column (None: the table's only image feature)")
        channels: list[PositiveInt] = Field([16, 32, 32], min_length=1, description="channels of each conv block")
        threshold: float = Field(0.5, gt=0, lt=1, description="defect probability at which an image is flagged")
        int8: bool = Field(True, description="also quantise to INT8 and report its rates and latency")

    def fit_inputs(self, table: Table) -> None:
        names = [n for n in table.schema.features(Modality.IMAGE) if n in table.arrays]
        column = self.params.column or (names[0] if len(names) == 1 else None)
        if column is None or column not in table.arrays:
            raise InputError(f"defect-net: needs one image column (N x C x H x W); image features: {names or 'none'}")
        self.column_ = column

    def inputs(self, table: Table) -> torch.Tensor:
        import torch

        v = table.arrays[self.column_]
        if v.ndim != 4:
            raise InputError(f"defect-net: image column {self.column_!r} has shape {v.shape}; expected N x C x H x W")
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    def build(self, spec: DataSpec) -> torch.nn.Module:
        if len(spec.input_shape) != 3:
            raise InputError(f"defect-net: inputs must be N x C x H x W, got samples of shape {spec.input_shape}")
        return make_net(spec.input_shape[0], spec.n_outputs, list(self.params.channels))

    def evaluate(self, module: torch.nn.Module, table: Table, ctx: StageContext) -> dict[str, float]:
        import copy

        import torch

        x = self.inputs(table)
        float_model = copy.deepcopy(module).cpu().eval()
        with torch.no_grad():
            if float_model(x[:1]).shape[1] != 2:
                return {}
        y = table.y.to_numpy().astype(bool)
        out = self._rates(float_model, x, y, "")
        models = {"": float_model}
        if self.params.int8:
            models["int8_"] = quantize_int8(module, x)
            out.update(self._rates(models["int8_"], x, y, "int8_"))
        for prefix, m in models.items():
            with torch.no_grad():
                scripted = torch.jit.trace(m, x[:1])
            if ctx.artifacts is not None:
                scripted.save(str(ctx.artifacts / f"model{'-int8' if prefix else ''}.ts"))
            out.update({prefix + k: v for k, v in latency(scripted, x[:1]).items()})
        return out

    def _rates(self, model: Any, x: torch.Tensor, defective: np.ndarray, prefix: str) -> dict[str, float]:
        import torch

        with torch.no_grad():
            flagged = (model(x).softmax(1)[:, 1] >= self.params.threshold).numpy()
        out = {}
        if defective.any():
            out[prefix + "detection_rate"] = float(flagged[defective].mean())
        if (~defective).any():
            out[prefix + "false_alarm_rate"] = float(flagged[~defective].mean())
        return out
