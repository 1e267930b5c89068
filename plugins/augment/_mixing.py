"""Batch mixing shared by ``cutmix`` and ``mixup``: soft targets and the draws they take.

Every draw comes from the training loop's ``torch.Generator`` (CPU), so a resumed run mixes
as the interrupted one would have; tensors stay on the batch's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from forgeline.core import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from forgeline.core import DataSpec


def beta(generator: torch.Generator, alpha: float) -> float:
    """One draw of Beta(alpha, alpha), the mixing weight of CutMix and MixUp."""
    import torch

    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def partner(batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the batch: each sample is mixed with the one at its position."""
    import torch

    n = len(batch["target"])
    return torch.randperm(n, generator=generator).to(batch["target"].device)


def soft_targets(target: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Targets as float rows that mix linearly: one-hot class weights (classification; already
    soft ones are kept) or the regression values."""
    import torch

    if spec.task != "classification":
        return target.float()
    if target.is_floating_point() and target.ndim == 2:
        return target
    return torch.nn.functional.one_hot(target.long(), spec.n_outputs).float()


def mix(batch: dict[str, torch.Tensor], key: str, inputs: torch.Tensor, order: torch.Tensor, lam: float,
        spec: DataSpec) -> dict[str, torch.Tensor]:
    """The batch with ``inputs`` under ``key`` and targets mixed ``lam`` : ``1 - lam`` with ``order``'s."""
    target = soft_targets(batch["target"], spec)
    return {**batch, key: inputs, "target": lam * target + (1.0 - lam) * target[order]}


def images(batch: dict[str, Any], key: str, who: str) -> torch.Tensor:
    """The batch's image tensor under ``key`` (N x C x H x W), or a clear error."""
    x = batch.get(key)
    if x is None:
        raise InputError(f"{who}: the batch has no input {key!r} (inputs: {', '.join(k for k in batch if k != 'target')}); "
                         f"set 'key' to the image input")
    if x.ndim != 4:
        raise InputError(f"{who}: input {key!r} has shape {tuple(x.shape)}; CutMix needs images "
                         f"N x C x H x W (use mixup for other inputs)")
    return x


def cutmix(batch: dict[str, torch.Tensor], key: str, alpha: float, generator: torch.Generator,
           spec: DataSpec, who: str) -> dict[str, torch.Tensor]:
    """CutMix (Yun et al. 2019): a box of each image is pasted from its partner; targets mix
    by the pasted area."""
    x = images(batch, key, who)
    lam = beta(generator, alpha)
    order = partner(batch, generator)
    h, w = x.shape[-2:]
    ratio = (1.0 - lam) ** 0.5
    bh, bw = int(h * ratio), int(w * ratio)
    cy, cx = (int(v) for v in torch_randint(generator, (h, w)))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2 + bh % 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2 + bw % 2, w)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[order][..., y0:y1, x0:x1]
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the box may be clipped at the border
    return mix(batch, key, mixed, order, kept, spec)


def torch_randint(generator: torch.Generator, highs: tuple[int, int]) -> list[int]:
    import torch

    return [int(torch.randint(0, high, (1,), generator=generator)) for high in highs]


def mixup(batch: dict[str, torch.Tensor], key: str, alpha: float, generator: torch.Generator,
          spec: DataSpec, who: str) -> dict[str, torch.Tensor]:
    """MixUp (Zhang et al. 2018): inputs and targets mixed linearly with a partner."""
    x = batch.get(key)
    if x is None:
        raise InputError(f"{who}: the batch has no input {key!r}; set 'key' to the input to mix")
    lam = beta(generator, alpha)
    order = partner(batch, generator)
    mixed = x * lam + x[order] * (1.0 - lam) if x.is_floating_point() else x
    return mix(batch, key, mixed, order, lam, spec)
