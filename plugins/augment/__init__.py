"""Built-in augmenters: text (EDA), images (albumentations), CutMix/MixUp batches, time series."""

from __future__ import annotations

from forgeline.core import hookimpl

from .text_eda import TextEda


@hookimpl
def forgeline_augmenters() -> list[type]:
    return [TextEda]
