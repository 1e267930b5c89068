"""``image``: per-image albumentations transforms, named in the pipeline file.

Transforms are given by name (``color_jitter`` or ``ColorJitter``) with their arguments: a
mapping of keyword arguments, a list of positional ones (``color_jitter: [0.8, 0.8, 0.8,
0.2]``), or one value. Each is built when the file is validated, so an unknown transform
or argument is a validation error that names the closest ones. Images (N x C x H x W
arrays) go through one ``albumentations.Compose`` image by image: the same calls as a
hand-written loop, with one transposition of the whole batch around them.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from typing import Any, Mapping

import numpy as np
from pydantic import Field, field_validator

from forgeline.core import InputError, Modality

from ._rows import RowAugmenter, RowParams, seeds


@functools.cache
def transform_classes() -> dict[str, type]:
    """albumentations' per-image transforms by snake_case name (``ColorJitter`` -> ``color_jitter``)."""
    import albumentations as A

    found = {}
    for name in dir(A):
        cls = getattr(A, name)
        if isinstance(cls, type) and issubclass(cls, A.BasicTransform) and not name.startswith("_") \
                and not inspect.isabstract(cls) and cls.__module__.startswith("albumentations.augmentations"):
            found[re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()] = cls
    return found


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def build_transform(name: str, args: Any) -> Any:
    """One albumentations transform from its name and arguments; ValueError (one line) if wrong."""
    classes = transform_classes()
    cls = classes.get(_snake(name))
    if cls is None:
        close = difflib.get_close_matches(_snake(name), list(classes), n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown albumentations transform {name!r}{hint}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    if isinstance(args, Mapping):
        unknown = [k for k in args if k not in accepted]
        if unknown:
            close = difflib.get_close_matches(unknown[0], accepted, n=3, cutoff=0.5)
            raise ValueError(f"{name}: {cls.__name__} has no argument {unknown[0]!r}"
                             f"{'; closest: ' + ', '.join(close) if close else ''} (arguments: {', '.join(accepted)})")
        pos, kw = [], dict(args)
    else:
        pos, kw = (list(args) if isinstance(args, (list, tuple)) else [] if args is None else [args]), {}
        if len(pos) > len(accepted):
            raise ValueError(f"{name}: {cls.__name__} takes at most {len(accepted)} arguments "
                             f"({', '.join(accepted)}), got {len(pos)}")
    try:
        return cls(*pos, **kw)
    except Exception as err:  # albumentations checks its arguments with pydantic: keep the first line
        first = str(err).splitlines()
        detail = " ".join(first[1:3]).strip() if len(first) > 1 else (first[0] if first else type(err).__name__)
        raise ValueError(f"{name}: bad arguments for {cls.__name__}: {detail}") from None


class ImageParams(RowParams):
    transforms: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"horizontal_flip": {"p": 0.5}}],
        description="albumentations transforms in order, each {name: arguments}: a mapping of keyword "
                    "arguments, a list of positional ones, or one value")

    @field_validator("transforms")
    @classmethod
    def _check(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(v):
            if len(item) != 1:
                raise ValueError(f"item {i} must name one transform, as {{name: arguments}}; got {sorted(item)}")
            (name, args), = item.items()
            build_transform(name, args)
        return v


class Image(RowAugmenter):
    """Per-image albumentations transforms (flips, colour jitter, affine, blur ...) by name."""

    name = "image"
    Params = ImageParams
    modalities = frozenset({Modality.IMAGE})

    @classmethod
    def from_config(cls, section: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        # every key but the batch mixers' *_alpha is a transform
        taken = {k: v for k, v in values.items() if not k.endswith("_alpha")}
        if section != "image_augmentation" or not taken:
            return None
        return {"transforms": [{k: v} for k, v in taken.items()]}, {k: v for k, v in values.items() if k not in taken}

    def compose(self) -> Any:
        """The albumentations Compose of the transforms, built once."""
        composed = getattr(self, "_compose", None)
        if composed is None:
            import albumentations as A

            built = [build_transform(*next(iter(item.items()))) for item in self.params.transforms]
            composed = self._compose = A.Compose(built)
        return composed

    def _augment_values(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if values.ndim != 4:
            raise InputError(f"{self.name}: images must be N x C x H x W arrays, got shape {values.shape}")
        if values.dtype.kind == "f" and len(values) and (values.min() < 0 or values.max() > 1):
            raise InputError(f"{self.name}: float images must lie in [0, 1] for albumentations, these reach "
                             f"[{values.min():g}, {values.max():g}] (scale them first, e.g. digits with scale: true)")
        compose = self.compose()
        compose.set_random_seed(seeds(rng)[0])
        # albumentations reads H x W x C: each image is transposed on its own and written back
        # through a transposed view, cheaper than two whole-array transposed copies
        out = np.empty_like(values)
        hwc_out = out.transpose(0, 2, 3, 1)
        try:
            for i in range(len(values)):
                image = np.ascontiguousarray(values[i].transpose(1, 2, 0))
                hwc_out[i] = compose(image=image)["image"].reshape(hwc_out.shape[1:])
        except ValueError as err:
            raise InputError(f"{self.name}: the transforms must keep each image's size and channels "
                             f"{hwc_out.shape[1:]} ({err})") from None
        return out
