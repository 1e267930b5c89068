"""Generated datasets for the training scenarios: images of shapes, signal time series, reviews.

Every generator is vectorised (numpy; pyarrow's string kernels for text) and driven only by
``ctx.seed``: the same seed gives the same table. Labels are integer class codes; ``meta["classes"]`` names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from pydantic import Field, field_validator

from forgeline.core import Dataset, InputError, Modality, Params, StageContext, Table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

LABEL = "label"


# ----------------------------------------------------------------------------- text helpers
# Generated text is built slot by slot on whole columns with pyarrow's string kernels:
# a Python loop over a million rows would take seconds per slot.

def choose(rng: np.random.Generator, words: Sequence[str], n: int) -> pa.StringArray:
    """``n`` words drawn uniformly from ``words``."""
    import pyarrow as pa

    return pa.array(words, pa.string()).take(pa.array(rng.integers(0, len(words), n)))


def concat(*parts: pa.Array | str) -> pa.StringArray:
    """Element-wise concatenation of string arrays and literal strings."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*parts, "")


def either(condition: np.ndarray, if_true: pa.Array, if_false: pa.Array) -> pa.StringArray:
    """Element-wise choice between two string arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pa.array(condition), if_true, if_false)


def to_str_series(texts: pa.StringArray) -> pd.Series:
    """A pandas ``str`` column (what pandas gives when it reads text from a file)."""
    import pandas as pd

    return pd.Series(texts, dtype="str")


# ----------------------------------------------------------------------------- shapes

SHAPES = ("square", "circle", "cross", "triangle", "diamond")


def _shape_masks(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, width: float) -> np.ndarray:
    """Pixels of a shape of half-size ``r`` centred at offsets ``dx``/``dy`` (n x S x S)."""
    half = width / 2
    if kind == "square":  # outline
        return np.abs(np.maximum(np.abs(dx), np.abs(dy)) - r) <= half
    if kind == "circle":  # ring
        return np.abs(np.hypot(dx, dy) - r) <= half
    if kind == "cross":  # plus sign
        return ((np.abs(dx) <= half) & (np.abs(dy) <= r)) | ((np.abs(dy) <= half) & (np.abs(dx) <= r))
    if kind == "triangle":  # filled, apex up
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == "diamond":  # outline of a square turned 45 degrees
        return np.abs(np.abs(dx) + np.abs(dy) - r) <= half * 1.4
    raise ValueError(kind)


def _distinct_classes(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("classes must be distinct")
    return v


class ShapesParams(Params):
    rows: int = Field(2000, ge=1, description="number of images")
    size: int = Field(16, ge=8, le=256, description="image height and width in pixels")
    classes: list[Literal[SHAPES]] = Field(list(SHAPES[:4]), min_length=2,  # type: ignore[valid-type]
                                           description=f"shapes to draw, one class each; from {', '.join(SHAPES)}")
    noise: float = Field(0.15, ge=0, description="std of Gaussian pixel noise (shapes have intensity 0.6-1)")

    _distinct = field_validator("classes")(classmethod(lambda cls, v: _distinct_classes(v)))


class Shapes(Dataset):
    """Greyscale images of simple shapes (square, circle, cross, ...) at random places and sizes."""

    name = "shapes"
    Params = ShapesParams
    default_target = LABEL
    modalities = frozenset({Modality.IMAGE})

    def columns(self) -> list[str] | None:
        return [LABEL, "image"]

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        p = self.params
        rng = np.random.default_rng(self.using(ctx).seed)
        n, s = p.rows, p.size
        labels = rng.integers(0, len(p.classes), n)
        half = rng.uniform(0.18 * s, 0.36 * s, n).astype(np.float32)
        # centres keep the whole shape (plus its stroke) inside the image
        margin = half + 1
        cx = (margin + rng.random(n) * (s - 1 - 2 * margin)).astype(np.float32)
        cy = (margin + rng.random(n) * (s - 1 - 2 * margin)).astype(np.float32)
        intensity = rng.uniform(0.6, 1.0, n).astype(np.float32)
        grid = np.arange(s, dtype=np.float32)
        images = np.zeros((n, 1, s, s), dtype=np.float32)
        width = max(1.0, s / 16)
        for code, kind in enumerate(p.classes):
            idx = np.flatnonzero(labels == code)
            dx = grid[None, None, :] - cx[idx, None, None]
            dy = grid[None, :, None] - cy[idx, None, None]
            mask = _shape_masks(kind, dx, dy, half[idx, None, None], width)
            images[idx, 0] = mask * intensity[idx, None, None]
        if p.noise:
            images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(p.noise)
        frame = pd.DataFrame({LABEL: labels.astype(np.int64)})
        return Table.from_frame(frame, LABEL, arrays={"image": images},
                                meta={"task": "classification", "classes": list(p.classes)})


# ----------------------------------------------------------------------------- signals

WAVES = ("sine", "square", "sawtooth", "chirp", "triangle")


def _waves(kind: str, cycles: np.ndarray, phase: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Unit-amplitude waveforms; ``cycles`` per window, ``phase`` in radians, ``t`` in [0, 1)."""
    theta = 2 * np.pi * cycles * t + phase
    if kind == "sine":
        return np.sin(theta)
    if kind == "square":
        return np.where(np.sin(theta) >= 0, 1.0, -1.0)
    if kind == "sawtooth":
        return 2 * np.mod(theta / (2 * np.pi), 1.0) - 1
    if kind == "triangle":
        return 2 * np.abs(2 * np.mod(theta / (2 * np.pi), 1.0) - 1) - 1
    if kind == "chirp":  # frequency sweeps linearly from `cycles` to 3x `cycles` over the window
        return np.sin(2 * np.pi * cycles * (t + t * t) + phase)
    raise ValueError(kind)


class SignalsParams(Params):
    rows: int = Field(2000, ge=1, description="number of series")
    channels: int = Field(1, ge=1, description="channels per series (same wave, own phase and noise)")
    length: int = Field(128, ge=16, description="time steps per series")
    classes: list[Literal[WAVES]] = Field(list(WAVES[:4]), min_length=2,  # type: ignore[valid-type]
                                          description=f"waveforms, one class each; from {', '.join(WAVES)}")
    min_cycles: float = Field(2.0, gt=0, description="lowest frequency, in cycles per series")
    max_cycles: float = Field(6.0, gt=0, description="highest frequency, in cycles per series")
    noise: float = Field(0.2, ge=0, description="std of Gaussian noise added (amplitudes are 0.5-1.5)")

    _distinct = field_validator("classes")(classmethod(lambda cls, v: _distinct_classes(v)))


class Signals(Dataset):
    """Time series of waveforms (sine, square, sawtooth, chirp, ...) with random frequency and phase."""

    name = "signals"
    Params = SignalsParams
    default_target = LABEL
    modalities = frozenset({Modality.SERIES})

    def problems(self) -> list[tuple[str, str]]:
        p = self.params
        if p.min_cycles > p.max_cycles:
            return [("min_cycles", f"min_cycles {p.min_cycles} is above max_cycles {p.max_cycles}")]
        if 3 * p.max_cycles > p.length / 4:  # chirps reach 3x; keep >= 4 samples per cycle
            return [("max_cycles", f"max_cycles {p.max_cycles} is too high for length {p.length}; "
                                   f"use at most {p.length / 12:g} so waves are not aliased")]
        return []

    def columns(self) -> list[str] | None:
        return [LABEL, "series"]

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        found = self.problems()
        if found:
            raise InputError(found[0][1])
        p = self.params
        rng = np.random.default_rng(self.using(ctx).seed)
        n, c = p.rows, p.channels
        labels = rng.integers(0, len(p.classes), n)
        cycles = rng.uniform(p.min_cycles, p.max_cycles, (n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, c, 1))
        amplitude = rng.uniform(0.5, 1.5, (n, c, 1))
        t = np.arange(p.length) / p.length
        series = np.empty((n, c, p.length), dtype=np.float32)
        for code, kind in enumerate(p.classes):
            idx = np.flatnonzero(labels == code)
            series[idx] = amplitude[idx] * _waves(kind, cycles[idx], phase[idx], t)
        if p.noise:
            series += rng.standard_normal(series.shape, dtype=np.float32) * np.float32(p.noise)
        frame = pd.DataFrame({LABEL: labels.astype(np.int64)})
        return Table.from_frame(frame, LABEL, arrays={"series": series},
                                meta={"task": "classification", "classes": list(p.classes)})


# ----------------------------------------------------------------------------- reviews

PRODUCTS = ("headphones", "blender", "coffee maker", "backpack", "phone case", "desk lamp", "keyboard",
            "vacuum cleaner", "water bottle", "running shoes", "toaster", "monitor", "office chair",
            "electric kettle", "smart watch", "tent", "air fryer", "charger", "novel", "frying pan")
OPENERS = ("I bought this {p} last month.", "Ordered the {p} for my sister.", "Got this {p} on sale.",
           "This is my second {p} from this brand.", "We have used the {p} for a few weeks.",
           "Picked up the {p} as a gift.", "Needed a new {p} for work.", "My old {p} broke, so I tried this one.")
POSITIVE = ("works perfectly", "is excellent", "exceeded my expectations", "is great value",
            "feels sturdy and well made", "is a pleasure to use", "arrived quickly and works great",
            "is amazing", "does exactly what I wanted", "is comfortable and reliable", "is fantastic",
            "was easy to set up", "looks beautiful", "is the best I have owned")
NEGATIVE = ("stopped working after a week", "is terrible", "was a waste of money", "feels cheap and flimsy",
            "is disappointing", "broke on the first day", "is awful to use", "arrived damaged",
            "does not work as described", "is noisy and unreliable", "is poor quality",
            "was hard to set up", "looks worse than the photos", "is the worst I have owned")
SUBJECTS = ("The {p}", "Overall it", "Honestly it", "The build", "The design", "Customer service",
            "The battery", "The packaging", "For the price it", "After a month it")
POSITIVE_CLOSINGS = ("Would buy again.", "Five stars from me.", "Recommended.")
NEGATIVE_CLOSINGS = ("One star.", "Returned it.", "Avoid.")
NEUTRAL_CLOSINGS = ("Not sure yet.", "Will update later.", "", "")  # "": many reviews just stop


class ReviewsParams(Params):
    rows: int = Field(2000, ge=1, description="number of reviews")
    sentences: int = Field(2, ge=1, le=6, description="opinion sentences per review")
    positive_share: float = Field(0.5, gt=0, lt=1, description="share of positive reviews")
    noise: float = Field(0.15, ge=0, lt=0.5, description="chance that an opinion sentence has the opposite "
                         "sentiment of the review (mixed reviews; labels stay the reviewer's verdict)")


class Reviews(Dataset):
    """Short product reviews with a positive/negative sentiment label learnable from their words."""

    name = "reviews"
    Params = ReviewsParams
    default_target = LABEL
    modalities = frozenset({Modality.TEXT})

    def columns(self) -> list[str] | None:
        return ["text", LABEL]

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd
        import pyarrow.compute as pc

        p = self.params
        rng = np.random.default_rng(self.using(ctx).seed)
        n = p.rows
        labels = (rng.random(n) < p.positive_share).astype(np.int64)
        product = rng.integers(0, len(PRODUCTS), n)
        text = _templated(rng, OPENERS, product)
        for _ in range(p.sentences):
            # each opinion agrees with the verdict, except with probability `noise`
            positive = (labels == 1) ^ (rng.random(n) < p.noise)
            phrase = either(positive, choose(rng, POSITIVE, n), choose(rng, NEGATIVE, n))
            text = concat(text, " ", _templated(rng, SUBJECTS, product), " ", phrase, ".")
        text = pc.utf8_trim_whitespace(concat(text, " ", self._closings(rng, labels)))
        frame = pd.DataFrame({"text": to_str_series(text), LABEL: labels})
        return Table.from_frame(frame, LABEL, meta={"task": "classification", "classes": ["negative", "positive"]})

    @staticmethod
    def _closings(rng: np.random.Generator, labels: np.ndarray) -> pa.StringArray:
        """A closing line that never contradicts the verdict (neutral ones for either)."""
        n = len(labels)
        return either(labels == 1, choose(rng, POSITIVE_CLOSINGS + NEUTRAL_CLOSINGS, n),
                      choose(rng, NEGATIVE_CLOSINGS + NEUTRAL_CLOSINGS, n))


def _templated(rng: np.random.Generator, templates: Sequence[str], product: np.ndarray) -> pa.StringArray:
    """One of ``templates`` per row, with ``{p}`` filled by the row's product."""
    import pyarrow as pa

    rendered = pa.array([t.format(p=name) for t in templates for name in PRODUCTS], pa.string())
    template = rng.integers(0, len(templates), len(product))
    return rendered.take(pa.array(template * len(PRODUCTS) + product))


DATASETS = [Shapes, Signals, Reviews]
