"""Built-in augmenters: text (EDA), images (albumentations), CutMix/MixUp batches, time series."""

from __future__ import annotations

from forgeline.core import hookimpl

from .cutmix import CutMix
from .image import Image
from .mixup import MixUp
from .text_eda import TextEda
from .timeseries import TimeSeries


@hookimpl
def forgeline_augmenters() -> list[type]:
    return [TextEda, Image, CutMix, MixUp, TimeSeries]
