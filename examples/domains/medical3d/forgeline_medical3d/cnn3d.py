"""``cnn3d``: a small 3D CNN on HU-windowed volumes, with detection and uncertainty at evaluation.

The network is fully convolutional: conv-BN-ReLU-pool blocks, 3D dropout, a 1x1x1 head giving
a coarse heatmap of class scores, and global max pooling to one score per class (multiple-
instance learning: a case is positive when some region is). So it takes any volume size
(progressive resolution) and its heatmap locates nodules without voxel labels.

``evaluate`` (the core calls it on the held-out split) reports:
- ``sensitivity``: share of nodules (``meta["nodules"]``) hit by a detection, and
  ``fp_per_volume``: detections that hit no nodule, per volume. A detection is a connected
  region of the upsampled heatmap above ``detect_threshold``; it hits a nodule when its centre
  lies within the nodule's radius plus one heatmap cell;
- Monte Carlo dropout (``mc_samples`` passes with dropout on) and test-time augmentation
  (flips) variance of each case's nodule probability, written beside the prediction in
  ``predictions.csv`` and averaged (overall, and on right vs wrong cases) in the metrics.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from pydantic import Field, PositiveInt

from forgeline.core import DataSpec, InputError, Model, Modality, Params, StageContext, Table

from .window import hu_window

if TYPE_CHECKING:  # pragma: no cover
    import torch

FLIPS = [(), (2,), (3,), (4,), (2, 3), (2, 3, 4)]


def _net(n_outputs: int, channels: list[int], dropout: float) -> torch.nn.Module:
    import torch
    from torch import nn

    class Net3D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width = 1
            for c in channels:
                layers += [nn.Conv3d(width, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU(inplace=True),
                           nn.MaxPool3d(2, ceil_mode=True)]
                width = c
            self.features = nn.Sequential(*layers)
            self.dropout = nn.Dropout3d(dropout)
            self.head = nn.Conv3d(width, n_outputs, 1)

        def heatmap(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.dropout(self.features(x)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.amax(self.heatmap(x), dim=(2, 3, 4))

    return Net3D()


class CNN3D(Model):
    """Small 3D CNN (fully convolutional, max-pooled heatmap) with MC-dropout/TTA uncertainty."""

    name = "cnn3d"
    modalities = frozenset({Modality.VOLUME})

    class Params(Params):
        column: str | None = Field(None, description="the volume column (None: the table's only volume feature)")
        channels: list[PositiveInt] = Field([8, 16], min_length=1, description="channels of each conv block")
        dropout: float = Field(0.2, ge=0, lt=1, description="3D dropout before the head (also used for MC dropout)")
        window: tuple[float, float] = Field((-1000.0, 400.0), description="HU window (low, high) scaled to [0, 1]")
        mc_samples: int = Field(8, ge=2, description="Monte Carlo dropout passes at evaluation")
        detect_threshold: float = Field(0.5, gt=0, lt=1, description="heatmap probability that makes a detection")

    def fit_inputs(self, table: Table) -> None:
        names = [n for n in table.schema.features(Modality.VOLUME) if n in table.arrays]
        column = self.params.column or (names[0] if len(names) == 1 else None)
        if column is None or column not in table.arrays:
            raise InputError(f"cnn3d: needs one volume column (N x 1 x D x H x W); volume features: {names or 'none'}"
                             + ("; set column:" if len(names) > 1 else ""))
        self.column_ = column

    def inputs(self, table: Table) -> torch.Tensor:
        import torch

        v = table.arrays[self.column_]
        if v.ndim == 4:
            v = v[:, None]
        if v.ndim != 5:
            raise InputError(f"cnn3d: volume column {self.column_!r} has shape {v.shape}; expected N x 1 x D x H x W")
        return torch.from_numpy(hu_window(v, *self.params.window).astype(np.float32))

    def build(self, spec: DataSpec) -> torch.nn.Module:
        if len(spec.input_shape) != 4:
            raise InputError(f"cnn3d: inputs must be N x C x D x H x W, got samples of shape {spec.input_shape}")
        return _net(spec.n_outputs, list(self.params.channels), self.params.dropout)

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, module: torch.nn.Module, table: Table, ctx: StageContext) -> dict[str, float]:
        import pandas as pd
        import torch

        device = next(module.parameters()).device
        x = self.inputs(table).to(device)
        with torch.no_grad():
            if module(x[:1]).shape[1] != 2:
                return {}  # detection and nodule probability need the two-class heatmap
            mc = self._mc_dropout(module, x)
            tta = self._tta(module, x)
            heat = torch.sigmoid(self._heat_logit(module, x)).cpu().numpy()
        prob = mc.mean(0)
        y = table.y.to_numpy()
        pred = (prob >= 0.5).astype(int)
        out = {"mc_variance_mean": float(mc.var(0).mean()), "tta_variance_mean": float(tta.var(0).mean())}
        right = pred == y
        if right.any() and (~right).any():
            out["mc_variance_right"] = float(mc.var(0)[right].mean())
            out["mc_variance_wrong"] = float(mc.var(0)[~right].mean())
        out.update(detections(heat, table, self.params.detect_threshold))
        if ctx.artifacts is not None:
            pd.DataFrame({"row_id": table.row_ids, "label": y, "probability": prob, "mc_variance": mc.var(0),
                          "tta_probability": tta.mean(0), "tta_variance": tta.var(0)}).to_csv(
                ctx.artifacts / "predictions.csv", index=False)
        return out

    def _mc_dropout(self, module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        """Nodule probability per pass with dropout on (BatchNorm stays in eval): passes x cases."""
        import torch

        with evaluating(module):
            for m in module.modules():
                if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                    m.train()
            return np.stack([module(x).softmax(1)[:, 1].cpu().numpy() for _ in range(self.params.mc_samples)])

    @staticmethod
    def _tta(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        """Nodule probability under each flip (flips keep the label): flips x cases."""
        with evaluating(module):
            return np.stack([module(x.flip(dims) if dims else x).softmax(1)[:, 1].cpu().numpy() for dims in FLIPS])

    @staticmethod
    def _heat_logit(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Nodule-vs-background logit per voxel, upsampled from the heatmap to the volume."""
        import torch.nn.functional as F

        with evaluating(module):
            h = module.heatmap(x)
        return F.interpolate(h[:, 1:2] - h[:, 0:1], size=x.shape[2:], mode="trilinear", align_corners=False)[:, 0]


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block, back in its own mode (and its dropouts') after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def detections(heat: np.ndarray, table: Table, threshold: float) -> dict[str, float]:
    """Per-nodule sensitivity and false positives per volume of thresholded heatmaps (N x D x H x W)."""
    from scipy import ndimage

    nodules = table.meta.get("nodules")
    cell = 2 ** 2  # one heatmap cell of the default two pooling blocks, in voxels
    hits = found = false_pos = 0
    total = 0
    for i, rid in enumerate(table.row_ids):
        regions, n = ndimage.label(heat[i] >= threshold)
        centres = np.asarray(ndimage.center_of_mass(heat[i], regions, range(1, n + 1))).reshape(-1, 3)
        truth = nodules.loc[[rid]] if nodules is not None and rid in nodules.index else None
        matched = np.zeros(len(centres), bool)
        if truth is not None:
            for _, nod in truth.iterrows():
                total += 1
                d = np.linalg.norm(centres - nod[["z", "y", "x"]].to_numpy(float), axis=1) if len(centres) else []
                close = np.asarray(d) <= nod["radius"] + cell
                found += bool(np.any(close))
                matched |= close
        hits += int(matched.sum())
        false_pos += int((~matched).sum())
    out = {"fp_per_volume": false_pos / max(len(table), 1)}
    if total:
        out["sensitivity"] = found / total
    return out
