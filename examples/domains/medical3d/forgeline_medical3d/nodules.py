"""``ct-nodules``: synthetic CT-like volumes in Hounsfield units, with nodules and their positions.

Each volume is lung parenchyma (about -850 HU) inside a soft-tissue wall (about 40 HU),
smoothed Gaussian texture and scanner noise; vessels are thin bright tubes (distractors).
Positive cases hold 1-2 ellipsoid nodules (solid, about 30 HU, radius ``radius`` voxels).
Labels: ``nodule`` (0/1) per volume; ``meta["nodules"]`` lists every nodule's centre and
radius by row id, which detection metrics and nodule-keeping crops use.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from forgeline.core import Dataset, Modality, Params, StageContext, Table


class CTNodules(Dataset):
    """Synthetic CT volumes (HU) with ellipsoid nodules: a volume array and a nodule label."""

    name = "ct-nodules"
    default_target = "nodule"
    modalities = frozenset({Modality.VOLUME})

    class Params(Params):
        volumes: int = Field(160, ge=4, description="number of volumes (cases)")
        size: int = Field(32, ge=12, le=128, description="edge of each cubic volume, in voxels")
        positive: float = Field(0.5, gt=0, lt=1, description="share of cases with nodules")
        radius: tuple[float, float] = Field((2.0, 4.0), description="nodule radius range, in voxels")
        noise_hu: float = Field(60.0, ge=0, description="scanner noise standard deviation, in HU")
        seed: int | None = Field(None, description="generator seed (None: the run's seed)")

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd
        from scipy import ndimage

        p = self.params
        ctx = ctx or getattr(self, "context", None) or StageContext.standalone()
        rng = np.random.default_rng(p.seed if p.seed is not None else ctx.seed)
        s = p.size
        grid = np.stack(np.meshgrid(*[np.arange(s)] * 3, indexing="ij")).astype(np.float32)
        centre = (s - 1) / 2
        wall = np.linalg.norm(grid - centre, axis=0) > 0.46 * s
        volumes = np.empty((p.volumes, 1, s, s, s), np.float32)
        labels = (rng.random(p.volumes) < p.positive).astype(np.int64)
        nodules = []
        for i in range(p.volumes):
            v = np.where(wall, 40.0, -850.0) + 80.0 * ndimage.gaussian_filter(rng.normal(size=(s, s, s)), 2.0) * 3
            for _ in range(rng.integers(1, 4)):  # vessels: thin tubes along an axis
                axis, (a, b) = rng.integers(3), rng.uniform(0.25 * s, 0.75 * s, 2)
                other = [ax for ax in range(3) if ax != axis]
                tube = np.hypot(grid[other[0]] - a, grid[other[1]] - b) < rng.uniform(0.6, 1.1)
                v[tube] = -100.0
            if labels[i]:
                for _ in range(rng.integers(1, 3)):
                    r = rng.uniform(*p.radius)
                    c = rng.uniform(0.3 * s, 0.7 * s, 3)
                    axes = r * rng.uniform(0.75, 1.25, 3)
                    inside = (((grid - c[:, None, None, None]) / axes[:, None, None, None]) ** 2).sum(0) <= 1
                    v[inside] = 30.0 + 20.0 * rng.normal(size=int(inside.sum()))
                    nodules.append((i, *c, r))
            volumes[i, 0] = v + rng.normal(0, p.noise_hu, v.shape)
        frame = pd.DataFrame({"nodule": labels})
        table = Table.from_frame(frame, target="nodule", arrays={"ct": volumes}, overrides={"ct": {"modality": "volume"}})
        found = pd.DataFrame(nodules, columns=["case", "z", "y", "x", "radius"])
        table.meta["nodules"] = found.assign(row_id=table.row_ids[found["case"].to_numpy(int)]).drop(columns="case") \
            .set_index("row_id")
        return table
