"""``textured-surfaces``: procedural surface textures (brushed metal, weave, grain), some defective.

Textures are sums of oriented gratings plus smoothed noise (each image its own texture
family, orientation and phase). A ``defect_rate`` share carries a real-looking defect made
differently from the synthetic ones the augmenter makes: ``crack`` (a jagged random-walk dark
line), ``stain`` (a soft blob of changed brightness), ``pit`` (a small dark crater with a bright
rim). Columns: ``defect`` (0/1, the target) and ``kind`` (ok/crack/stain/pit, role ``group``:
kept out of the features, used by few-shot episodes).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from forgeline.core import Dataset, Modality, Params, StageContext, Table

KINDS = ("crack", "stain", "pit")


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One defect-free texture in [0, 1] (size x size)."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:size, 0:size] / size
    family = rng.integers(3)
    img = np.zeros((size, size))
    for _ in range(2 + family):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(4, 12) * (1 + family)
        img += np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 2 * np.pi))
    img = img / (2 + family) * 0.25 + 0.5 + 0.1 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.0)
    return np.clip(img, 0, 1)


def real_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    s = img.shape[0]
    out = img.copy()
    if kind == "crack":
        p = rng.uniform(0.2 * s, 0.8 * s, 2)
        step = rng.normal(size=2)
        for _ in range(int(0.6 * s)):
            step = 0.7 * step + 0.3 * rng.normal(size=2) + 0.2 * np.sign(step)
            p = np.clip(p + step / max(np.linalg.norm(step), 1e-6), 0, s - 1)
            out[int(p[0]), int(p[1])] = 0.05
    elif kind == "stain":
        blob = np.zeros_like(img)
        blob[tuple(rng.integers(int(0.25 * s), int(0.75 * s), 2))] = 1
        blob = ndimage.gaussian_filter(blob, rng.uniform(2, 4) * s / 32)
        out = out + rng.choice([-1, 1]) * 0.45 * blob / blob.max()
    else:  # pit
        yy, xx = np.mgrid[0:s, 0:s]
        c, r = rng.uniform(0.2 * s, 0.8 * s, 2), rng.uniform(1.5, 3) * s / 32
        d = np.hypot(yy - c[0], xx - c[1])
        out[d < r + 1] = 0.95
        out[d < r] = 0.05
    return np.clip(out, 0, 1)


class TexturedSurfaces(Dataset):
    """Procedural textured-surface images (1 x S x S), a share with cracks, stains or pits."""

    name = "textured-surfaces"
    default_target = "defect"
    modalities = frozenset({Modality.IMAGE})

    class Params(Params):
        images: int = Field(400, ge=4, description="number of images")
        size: int = Field(32, ge=16, le=256, description="image edge, in pixels")
        defect_rate: float = Field(0.3, ge=0, lt=1, description="share of images with a real defect")
        seed: int | None = Field(None, description="generator seed (None: the run's seed)")

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        p = self.params
        ctx = ctx or getattr(self, "context", None) or StageContext.standalone()
        rng = np.random.default_rng(p.seed if p.seed is not None else ctx.seed)
        kinds = np.where(rng.random(p.images) < p.defect_rate, rng.choice(KINDS, p.images), "ok")
        images = np.empty((p.images, 1, p.size, p.size), np.float32)
        for i, kind in enumerate(kinds):
            img = texture(rng, p.size)
            images[i, 0] = img if kind == "ok" else real_defect(img, kind, rng)
        frame = pd.DataFrame({"defect": (kinds != "ok").astype(np.int64), "kind": kinds})
        return Table.from_frame(frame, target="defect", arrays={"surface": images},
                                overrides={"kind": {"role": "group", "modality": "categorical"},
                                           "surface": {"modality": "image"}})
