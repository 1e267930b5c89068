"""``mixup``: MixUp on batches inside the training loop, or CutMix and MixUp picked per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from pydantic import Field

from forgeline.core import Augmenter, Params

from . import _mixing

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from forgeline.core import DataSpec


class MixUpParams(Params):
    alpha: float = Field(0.4, gt=0, description="Beta(alpha, alpha) draws the mixing weight")
    cutmix_alpha: float | None = Field(None, gt=0, description="combined mode: each batch gets CutMix "
                                       "(with this alpha) or MixUp; the input must be images")
    switch_prob: float = Field(0.5, ge=0, le=1, description="combined mode: probability of CutMix for a batch")
    p: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    key: str = Field("x", description="the batch input to mix")


class MixUp(Augmenter):
    """MixUp: each sample blended with another of the batch, targets alike; or CutMix/MixUp per batch."""

    name = "mixup"
    Params = MixUpParams
    per_sample, per_batch = False, True

    @classmethod
    def from_config(cls, section: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if section != "image_augmentation" or "mixup_alpha" not in values:
            return None
        rest = dict(values)
        params = {"alpha": rest.pop("mixup_alpha")}
        if "cutmix_alpha" in rest:
            params["cutmix_alpha"] = rest.pop("cutmix_alpha")
        return params, rest

    def augment_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                      spec: DataSpec) -> dict[str, torch.Tensor]:
        import torch

        p = self.params
        # one draw decides both whether to mix and which of the two: uniform on [0, 1)
        u = float(torch.rand((), generator=generator))
        if u >= p.p:
            return batch
        if p.cutmix_alpha is not None and u < p.p * p.switch_prob:
            return _mixing.cutmix(batch, p.key, p.cutmix_alpha, generator, spec, self.name)
        return _mixing.mixup(batch, p.key, p.alpha, generator, spec, self.name)
