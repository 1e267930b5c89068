"""``progressive-resolution``: train on coarse volumes first, full resolution at the end.

A batch augmenter: the training loop calls ``set_epoch(epoch, epochs)`` before each epoch and
``augment_batch`` on every batch; the volumes are resampled (trilinear) to a scale that grows
linearly from ``start`` to 1 over the first ``ramp`` share of the epochs. The model must accept
any input size (``cnn3d`` pools globally). Outside training (no epoch set) volumes pass at
full resolution.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import Field

from forgeline.core import Augmenter, Modality, Params


class ProgressiveResolution(Augmenter):
    """Grows the training resolution of volumes over the epochs (progressive training)."""

    name = "progressive-resolution"
    modalities = frozenset({Modality.VOLUME})
    per_sample = False
    per_batch = True

    class Params(Params):
        start: float = Field(0.5, gt=0, le=1, description="resolution scale of the first epoch")
        ramp: float = Field(0.6, gt=0, le=1, description="share of the epochs over which the scale reaches 1")

    def set_epoch(self, epoch: int, epochs: int) -> None:
        span = max(1.0, self.params.ramp * (epochs - 1))
        self.scale_ = min(1.0, self.params.start + (1 - self.params.start) * epoch / span)
        self.history_ = [*getattr(self, "history_", []), round(self.scale_, 4)]

    def augment_batch(self, batch: Any, *rest: Any) -> Any:
        """Old loop: ``(inputs, targets, generator) -> (inputs, targets)``; batches as
        mappings (``batch["x"]``): ``(batch, generator, spec) -> batch``."""
        if isinstance(batch, Mapping):
            return {**batch, "x": self._resample(batch["x"])}
        return self._resample(batch), rest[0]

    def _resample(self, x: Any) -> Any:
        import torch.nn.functional as F

        scale = getattr(self, "scale_", 1.0)
        if scale >= 1.0 or x.ndim != 5:
            return x
        size = [max(4, round(n * scale)) for n in x.shape[2:]]
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
