"""``ct-augment3d``: 3D augmentation of CT volumes, per sample, on the HU values.

Flips and 90-degree rotations come from albumentations' ``CubicSymmetry`` (its 3D transform for
the 48 symmetries of a cube). albumentations 2.0 has no 3D arbitrary rotation, elastic
deformation, gamma or noise, so those are written on scipy.ndimage and numpy: rotation by a
random angle in a random plane (``ndimage.rotate``), elastic deformation (a Gaussian-smoothed
random displacement field through ``ndimage.map_coordinates``), gamma on the HU window, and
Gaussian scanner noise. Patch crops cut a random window that keeps every nodule of the case
(``meta["nodules"]``) and pad back to the volume's size with air, so labels stay true.

Offline (default): ``copies`` new rows per training row. With ``online: true`` the training
data loader may call :meth:`transform_rows` on each batch instead (same rows, new values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from forgeline.core import Augmenter, Modality, Params, StageContext, Table

from .window import AIR_HU, hu_window


class CTAugment3D(Augmenter):
    """3D flips/rotations (albumentations), rotation, elastic, gamma, noise and nodule-keeping crops on CT."""

    name = "ct-augment3d"
    modalities = frozenset({Modality.VOLUME})

    class Params(Params):
        copies: int = Field(1, ge=1, description="augmented copies per training row (offline mode)")
        online: bool = Field(False, description="augment each training batch in the loader instead of adding rows")
        symmetry: float = Field(0.5, ge=0, le=1, description="probability of a random flip/90-degree rotation")
        rotate: float = Field(15.0, ge=0, le=180, description="largest arbitrary rotation angle, in degrees")
        elastic_alpha: float = Field(2.0, ge=0, description="elastic displacement scale, in voxels (0: off)")
        elastic_sigma: float = Field(3.0, gt=0, description="smoothness of the elastic field, in voxels")
        gamma: tuple[float, float] = Field((0.8, 1.25), description="gamma range applied inside the HU window")
        window: tuple[float, float] = Field((-1000.0, 400.0), description="HU window (low, high) gamma works in")
        noise_hu: float = Field(20.0, ge=0, description="extra Gaussian noise std, in HU")
        crop: float = Field(0.8, gt=0, le=1, description="patch crop edge as a share of the volume (1: no crop)")

    def augment(self, table: Table, ctx: StageContext | None = None) -> Table:
        ctx = ctx or getattr(self, "context", None) or StageContext.standalone()
        source = table.take(np.repeat(table.row_ids, self.params.copies))
        return self.transform_rows(source, np.random.default_rng(ctx.seed))

    def transform_rows(self, table: Table, rng: np.random.Generator) -> Table:
        """The same rows (ids, order) with every volume column augmented."""
        nodules = table.meta.get("nodules")
        arrays = dict(table.arrays)
        for name in table.schema.features(Modality.VOLUME):
            if name in arrays:
                arrays[name] = np.stack([self._one(v, rng, _centres(nodules, rid))
                                         for v, rid in zip(arrays[name], table.row_ids)]).astype(np.float32)
        return Table(table.frame.copy(), table.schema, arrays, table.meta)

    # ----------------------------------------------------------------- one volume (C x D x H x W)

    def _one(self, volume: np.ndarray, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        p = self.params
        v = volume.astype(np.float32, copy=True)
        if rng.random() < p.symmetry:
            v = _cubic_symmetry(v, int(rng.integers(2**31)))
        if p.rotate:
            v = _rotate(v, rng, p.rotate)
        if p.elastic_alpha:
            v = _elastic(v, rng, p.elastic_alpha, p.elastic_sigma)
        if p.gamma != (1.0, 1.0):
            low, high = p.window
            g = rng.uniform(*p.gamma)
            inside = (v > low) & (v < high)
            v = np.where(inside, low + (high - low) * hu_window(v, low, high) ** g, v)
        if p.noise_hu:
            v = v + rng.normal(0, p.noise_hu, v.shape).astype(np.float32)
        if p.crop < 1:
            v = _crop_keeping(v, rng, p.crop, centres)
        return v


def _cubic_symmetry(v: np.ndarray, seed: int) -> np.ndarray:
    """One of the 48 flips/90-degree rotations, drawn by albumentations (volumes are D x H x W x C there)."""
    import albumentations as A

    transform = A.Compose([A.CubicSymmetry(p=1.0)], seed=seed)
    out = transform(volume=np.moveaxis(v, 0, -1))["volume"]
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def _rotate(v: np.ndarray, rng: np.random.Generator, max_angle: float) -> np.ndarray:
    from scipy import ndimage

    axes = [(1, 2), (1, 3), (2, 3)][rng.integers(3)]
    return ndimage.rotate(v, rng.uniform(-max_angle, max_angle), axes=axes, reshape=False, order=1,
                          mode="nearest")


def _elastic(v: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    from scipy import ndimage

    shape = v.shape[1:]
    coords = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    shifts = [ndimage.gaussian_filter(rng.uniform(-1, 1, shape), sigma) for _ in shape]
    scale = alpha / max(max(np.abs(s).max() for s in shifts), 1e-6)  # largest shift = alpha voxels
    where = [c + scale * s for c, s in zip(coords, shifts)]
    return np.stack([ndimage.map_coordinates(ch, where, order=1, mode="nearest") for ch in v])


def _crop_keeping(v: np.ndarray, rng: np.random.Generator, share: float, centres: np.ndarray) -> np.ndarray:
    """A random window of ``share`` of each edge that contains every centre, padded back with air."""
    out = np.full_like(v, AIR_HU)
    slices = []
    for axis, n in enumerate(v.shape[1:]):
        size = max(1, int(round(share * n)))
        lo, hi = 0, n - size
        if len(centres):
            lo = max(lo, int(np.ceil(centres[:, axis].max())) - size + 2)
            hi = min(hi, int(np.floor(centres[:, axis].min())) - 1)
        start = int(rng.integers(lo, hi + 1)) if hi >= lo else max(0, min(n - size, lo))
        slices.append(slice(start, start + size))
    out[(slice(None), *slices)] = v[(slice(None), *slices)]
    return out


def _centres(nodules: Any, row_id: int) -> np.ndarray:
    if nodules is None or row_id not in nodules.index:
        return np.empty((0, 3))
    return nodules.loc[[row_id], ["z", "y", "x"]].to_numpy(float)
