"""Few-shot defect classes: episodic sampling and a prototypical-network classifier.

A prototypical network (Snell et al., 2017) embeds images, averages each class's ``k`` support
embeddings into a prototype, and classifies a query by its (negative squared Euclidean)
distance to each prototype. Trained on episodes of base classes, it classifies new defect kinds
from a handful of examples without retraining. Written here on torch: the one maintained
library for it (learn2learn) pins old torch versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Episode:
    classes: list            # the episode's classes (labels as given)
    support: np.ndarray      # positions, n_way x k_shot
    query: np.ndarray        # positions, n_way x n_query


def episodes(labels: np.ndarray, n_way: int, k_shot: int, n_query: int, rng: np.random.Generator,
             count: int) -> Iterator[Episode]:
    """``count`` episodes: ``n_way`` classes, each with ``k_shot`` support and ``n_query`` query positions."""
    labels = np.asarray(labels)
    usable = [c for c in np.unique(labels) if (labels == c).sum() >= k_shot + n_query]
    if len(usable) < n_way:
        raise ValueError(f"episodes need {n_way} classes with >= {k_shot + n_query} examples each; "
                         f"only {len(usable)} have enough")
    for _ in range(count):
        classes = list(rng.choice(usable, n_way, replace=False))
        picks = [rng.choice(np.flatnonzero(labels == c), k_shot + n_query, replace=False) for c in classes]
        yield Episode(classes, np.stack([p[:k_shot] for p in picks]), np.stack([p[k_shot:] for p in picks]))


class ProtoNet:
    """A prototypical-network classifier around an embedding module (``module.embed`` or the module)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = encoder

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(x) if hasattr(self.encoder, "embed") else self.encoder(x)

    def logits(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """support: n_way x k x ...; query: M x ... -> M x n_way (negative squared distances)."""
        n_way, k = support.shape[:2]
        protos = self._embed(support.flatten(0, 1)).view(n_way, k, -1).mean(1)
        return -(self._embed(query)[:, None, :] - protos[None]).pow(2).sum(-1)

    def fit(self, x: torch.Tensor, labels: np.ndarray, *, n_way: int = 2, k_shot: int = 5, n_query: int = 5,
            episodes_: int = 60, lr: float = 1e-3, seed: int = 0) -> list[float]:
        """Episodic training on base classes; returns the loss per episode."""
        import torch

        torch.manual_seed(seed)
        opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self.encoder.train()
        losses = []
        for ep in episodes(labels, n_way, k_shot, n_query, np.random.default_rng(seed), episodes_):
            target = torch.arange(n_way).repeat_interleave(n_query)
            loss = torch.nn.functional.cross_entropy(self.logits(x[ep.support], x[ep.query.reshape(-1)]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    def accuracy(self, x: torch.Tensor, labels: np.ndarray, *, n_way: int, k_shot: int, n_query: int = 5,
                 episodes_: int = 20, seed: int = 1) -> float:
        """Mean query accuracy over episodes of ``labels``' classes (e.g. new defect kinds)."""
        import torch

        self.encoder.eval()
        right = total = 0
        with torch.no_grad():
            for ep in episodes(labels, n_way, k_shot, n_query, np.random.default_rng(seed), episodes_):
                pred = self.logits(x[ep.support], x[ep.query.reshape(-1)]).argmax(1)
                right += int((pred == torch.arange(n_way).repeat_interleave(n_query)).sum())
                total += pred.numel()
        return right / total
