"""Defect synthesis on defect-free images, each method returning the new image and its mask.

- ``cutpaste``: a rectangle cut from the image, jittered in brightness, pasted elsewhere
  (Li et al., CutPaste, 2021);
- ``perlin``: a thresholded Perlin-noise mask blended with a foreign texture at a random
  opacity (Zavrtanik et al., DRAEM, 2021). Perlin noise is written here on numpy (gradient
  noise on a lattice, smoothstep-faded): no maintained small library provides it;
- ``scratch``: a thin straight or slightly curved line, darker or brighter;
- ``spot``: a small soft disk of changed brightness.

The ``defect-synthesis`` augmenter turns each defect-free training image into ``copies``
defective ones labelled as defects, so a detector trains without collected defects.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from forgeline.core import Augmenter, InputError, Modality, Params, StageContext, Table

METHODS = ("cutpaste", "perlin", "scratch", "spot")


def perlin(shape: tuple[int, int], res: int, rng: np.random.Generator) -> np.ndarray:
    """2D Perlin noise in about [-1, 1], ``res`` lattice cells per edge (shape divisible or not)."""
    h, w = shape
    angles = rng.uniform(0, 2 * np.pi, (res + 1, res + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], -1)
    y, x = np.mgrid[0:h, 0:w]
    fy, fx = y * res / h, x * res / w
    iy, ix = fy.astype(int), fx.astype(int)
    dy, dx = fy - iy, fx - ix

    def dot(oy: int, ox: int) -> np.ndarray:
        g = grads[iy + oy, ix + ox]
        return g[..., 0] * (dy - oy) + g[..., 1] * (dx - ox)

    fade = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3  # noqa: E731 - Perlin's smootherstep
    u, v = fade(dx), fade(dy)
    top = dot(0, 0) * (1 - u) + dot(0, 1) * u
    bottom = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return (top * (1 - v) + bottom * v) * np.sqrt(2)


def synthesize(img: np.ndarray, method: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A defective copy of ``img`` (H x W, in [0, 1]) and its boolean defect mask."""
    from scipy import ndimage

    h, w = img.shape
    out, mask = img.copy(), np.zeros((h, w), bool)
    if method == "cutpaste":
        ph, pw = rng.integers(h // 8, h // 3 + 1), rng.integers(w // 8, w // 3 + 1)
        sy, sx = rng.integers(0, h - ph), rng.integers(0, w - pw)
        ty, tx = rng.integers(0, h - ph), rng.integers(0, w - pw)
        patch = img[sy:sy + ph, sx:sx + pw]
        out[ty:ty + ph, tx:tx + pw] = np.clip(np.rot90(patch, 2) * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15), 0, 1)
        mask[ty:ty + ph, tx:tx + pw] = True
    elif method == "perlin":
        for _ in range(10):  # redraw until the threshold leaves a visible region
            mask = perlin((h, w), int(rng.choice([2, 4])), rng) > rng.uniform(0.3, 0.5)
            if mask.mean() > 0.02:
                break
        foreign = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 2))
        foreign = (foreign - foreign.min()) / max(np.ptp(foreign), 1e-6)
        beta = rng.uniform(0.2, 0.8)
        out = np.where(mask, beta * img + (1 - beta) * foreign, img)
    elif method == "scratch":
        n = 2 * max(h, w)
        a, b = rng.uniform(0, [h, w]), rng.uniform(0, [h, w])
        t = np.linspace(0, 1, n)[:, None]
        bend = np.sin(np.pi * t) * rng.normal(0, 0.08 * h, 2)
        pts = np.clip(np.round(a + t * (b - a) + bend), 0, [h - 1, w - 1]).astype(int)
        mask[pts[:, 0], pts[:, 1]] = True
        out[mask] = rng.choice([0.02, 0.98])
    elif method == "spot":
        c, r = rng.uniform(0.15, 0.85, 2) * [h, w], rng.uniform(0.04, 0.12) * h
        yy, xx = np.mgrid[0:h, 0:w]
        d = np.hypot(yy - c[0], xx - c[1])
        mask = d <= r
        out = np.clip(img + rng.choice([-1, 1]) * 0.5 * np.exp(-(d / r) ** 2 * 2) * (d <= 1.5 * r), 0, 1)
    else:
        raise ValueError(f"unknown defect method {method!r}; known: {', '.join(METHODS)}")
    return out.astype(img.dtype, copy=False), mask


class DefectSynthesis(Augmenter):
    """Synthetic defects on defect-free images: CutPaste, Perlin anomalies (DRAEM), scratches, spots."""

    name = "defect-synthesis"
    modalities = frozenset({Modality.IMAGE})

    class Params(Params):
        methods: list[Literal["cutpaste", "perlin", "scratch", "spot"]] = Field(
            list(METHODS), min_length=1, description="defect methods, drawn uniformly per new image")
        copies: int = Field(1, ge=1, description="defective copies made from each defect-free image")
        good_label: int | str = Field(0, description="target value of defect-free rows (the sources)")
        defect_label: int | str = Field(1, description="target value given to the synthetic rows")

    def augment(self, table: Table, ctx: StageContext | None = None) -> Table:
        ctx = ctx or getattr(self, "context", None) or StageContext.standalone()
        rng = np.random.default_rng(ctx.seed)
        y = table.y
        if y is None:
            raise InputError("defect-synthesis: needs a target column telling good from defective rows")
        good = table.row_ids[(y == self.params.good_label).to_numpy()]
        source = table.take(np.repeat(good, self.params.copies))
        arrays = dict(source.arrays)
        for name in table.schema.features(Modality.IMAGE):
            if name in arrays:
                imgs = arrays[name].copy()
                for i in range(len(imgs)):
                    method = self.params.methods[rng.integers(len(self.params.methods))]
                    for c in range(imgs.shape[1]):  # the same defect (seeded alike) on every channel
                        imgs[i, c] = synthesize(imgs[i, c], method, np.random.default_rng([ctx.seed, i]))[0]
                arrays[name] = imgs
        frame = source.frame.copy()
        frame[table.target] = np.asarray([self.params.defect_label] * len(frame), dtype=y.dtype)
        return Table(frame, table.schema, arrays, table.meta)
