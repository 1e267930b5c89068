"""forgeline-industrial: surface-defect components, registered through the ``forgeline.plugins`` entry point.

- dataset ``textured-surfaces``: procedural textures, some with real-looking defects (cracks, stains, pits);
- augmenter ``defect-synthesis``: CutPaste, Perlin-noise anomalies (DRAEM style), scratches and
  spots made from defect-free images (with masks, see :mod:`.synthesis`);
- model ``defect-net``: a small CNN whose evaluation reports detection and false-alarm rates and
  the batch-1 latency (p50/p95) and throughput of its TorchScript export, in float32 and INT8;
- :mod:`.fewshot`: episodic sampling and a prototypical-network classifier for new defect kinds.
"""

from __future__ import annotations

from forgeline.core import hookimpl

from .defect_net import DefectNet
from .surfaces import TexturedSurfaces
from .synthesis import DefectSynthesis

__all__ = ["DefectNet", "DefectSynthesis", "TexturedSurfaces"]


@hookimpl
def forgeline_datasets():
    return [TexturedSurfaces]


@hookimpl
def forgeline_augmenters():
    return [DefectSynthesis]


@hookimpl
def forgeline_models():
    return [DefectNet]
