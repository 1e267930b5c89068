"""``cutmix``: CutMix on image batches inside the training loop, with soft targets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from pydantic import Field

from forgeline.core import Augmenter, Modality, Params

from . import _mixing

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from forgeline.core import DataSpec


class CutMixParams(Params):
    alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) draws the share of each image kept")
    p: float = Field(1.0, ge=0, le=1, description="probability that a batch is mixed")
    key: str = Field("x", description="the batch input holding the images (N x C x H x W)")


class CutMix(Augmenter):
    """CutMix: pastes a box from another image of the batch; targets mix by the box's area."""

    name = "cutmix"
    Params = CutMixParams
    modalities = frozenset({Modality.IMAGE})
    per_sample, per_batch = False, True

    @classmethod
    def from_config(cls, section: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        # with mixup_alpha too, `mixup` takes both and picks one per batch
        if section != "image_augmentation" or "cutmix_alpha" not in values or "mixup_alpha" in values:
            return None
        rest = dict(values)
        return {"alpha": rest.pop("cutmix_alpha")}, rest

    def augment_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                      spec: DataSpec) -> dict[str, torch.Tensor]:
        import torch

        if self.params.p < 1 and float(torch.rand((), generator=generator)) >= self.params.p:
            return batch
        return _mixing.cutmix(batch, self.params.key, self.params.alpha, generator, spec, self.name)
