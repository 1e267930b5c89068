"""forgeline-medical3d: CT-volume components, registered through the ``forgeline.plugins`` entry point.

- dataset ``ct-nodules``: synthetic CT-like volumes (HU) with ellipsoid nodules and their positions;
- augmenter ``ct-augment3d``: flips and 90-degree rotations (albumentations' CubicSymmetry),
  arbitrary rotations, elastic deformation, gamma, noise and nodule-keeping patch crops;
- augmenter ``progressive-resolution``: grows the training resolution over the epochs;
- model ``cnn3d``: a small 3D CNN on HU-windowed volumes whose evaluation reports per-nodule
  sensitivity, false positives per volume, and MC-dropout / test-time-augmentation variance.
"""

from __future__ import annotations

from forgeline.core import hookimpl

from .augment3d import CTAugment3D
from .cnn3d import CNN3D
from .nodules import CTNodules
from .progressive import ProgressiveResolution

__all__ = ["CNN3D", "CTAugment3D", "CTNodules", "ProgressiveResolution"]


@hookimpl
def forgeline_datasets():
    return [CTNodules]


@hookimpl
def forgeline_augmenters():
    return [CTAugment3D, ProgressiveResolution]


@hookimpl
def forgeline_models():
    return [CNN3D]
