"""``timeseries``: tsaug's time warping, drift, noise and crop, plus frequency-domain transforms.

tsaug has no frequency-domain augmentation, so amplitude and phase perturbation and frequency
masking are written here on numpy's real FFT (as in Wen et al., "Time Series Data
Augmentation for Deep Learning", 2021), vectorised over the whole batch. Series are
N x C x T arrays (tsaug reads N x T x C); every operation keeps the length T.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from forgeline.core import InputError, Modality

from ._rows import RowAugmenter, RowParams, seeds


class TimeSeriesParams(RowParams):
    time_warp: float = Field(0.5, ge=0, le=1, description="probability of a random time warp (tsaug TimeWarp)")
    max_speed_ratio: float = Field(2.0, ge=1, description="time warp: largest ratio of local speeds")
    drift: float = Field(0.5, ge=0, le=1, description="probability of a smooth random drift (tsaug Drift)")
    max_drift: float = Field(0.3, gt=0, description="drift: largest drift, relative to the series' range")
    noise: float = Field(0.5, ge=0, le=1, description="probability of Gaussian noise (tsaug AddNoise)")
    noise_scale: float = Field(0.05, gt=0, description="noise: std, relative to the series' range")
    crop: float = Field(0.0, ge=0, le=1, description="probability of a random crop stretched back to "
                        "full length (tsaug Crop)")
    crop_size: float = Field(0.8, gt=0, lt=1, description="crop: share of the series kept")
    amplitude: float = Field(0.0, ge=0, le=1, description="probability of scaling each frequency's amplitude")
    amplitude_std: float = Field(0.1, gt=0, description="amplitude: std of the scale factors around 1")
    phase: float = Field(0.0, ge=0, le=1, description="probability of shifting each frequency's phase")
    max_phase: float = Field(0.3, gt=0, le=np.pi, description="phase: largest shift in radians")
    frequency_mask: float = Field(0.0, ge=0, le=1, description="probability of zeroing a band of frequencies")
    mask_share: float = Field(0.1, gt=0, lt=1, description="frequency mask: share of the frequencies zeroed")


class TimeSeries(RowAugmenter):
    """Time series: tsaug time warp, drift, noise, crop; FFT amplitude, phase, frequency masking."""

    name = "timeseries"
    Params = TimeSeriesParams
    modalities = frozenset({Modality.SERIES})

    def _augment_values(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if values.ndim != 3:
            raise InputError(f"{self.name}: series must be N x C x T arrays, got shape {values.shape}")
        p = self.params
        x = values.astype(np.float32, copy=True)
        length = x.shape[-1]
        ntc = np.ascontiguousarray(x.transpose(0, 2, 1))
        for op, prob in zip(_tsaug_ops(p, length), (p.time_warp, p.drift, p.noise, p.crop)):
            rows = np.flatnonzero(rng.random(len(x)) < prob)
            if len(rows):
                op.seed = seeds(rng)[0]  # tsaug draws from a RandomState(seed)
                ntc[rows] = op.augment(ntc[rows])
        x = np.ascontiguousarray(ntc.transpose(0, 2, 1))
        for prob, fft_op in ((p.amplitude, _amplitude), (p.phase, _phase), (p.frequency_mask, _frequency_mask)):
            rows = np.flatnonzero(rng.random(len(x)) < prob)
            if len(rows):
                x[rows] = fft_op(x[rows], p, rng)
        return x.astype(values.dtype, copy=False)


def _tsaug_ops(p: TimeSeriesParams, length: int) -> list[Any]:
    import tsaug

    return [tsaug.TimeWarp(n_speed_change=3, max_speed_ratio=p.max_speed_ratio),
            tsaug.Drift(max_drift=p.max_drift, n_drift_points=3),
            tsaug.AddNoise(scale=p.noise_scale),
            tsaug.Crop(size=max(2, int(p.crop_size * length)), resize=length)]


def _amplitude(x: np.ndarray, p: TimeSeriesParams, rng: np.random.Generator) -> np.ndarray:
    """Each frequency's magnitude scaled by a factor ~ N(1, amplitude_std); phases kept."""
    spectrum = np.fft.rfft(x, axis=-1)
    scale = np.clip(rng.normal(1.0, p.amplitude_std, spectrum.shape), 0, None)
    scale[..., 0] = 1.0  # keep the mean level
    return np.fft.irfft(spectrum * scale, n=x.shape[-1], axis=-1)


def _phase(x: np.ndarray, p: TimeSeriesParams, rng: np.random.Generator) -> np.ndarray:
    """Each frequency's phase shifted by U(-max_phase, max_phase); magnitudes kept."""
    spectrum = np.fft.rfft(x, axis=-1)
    shift = rng.uniform(-p.max_phase, p.max_phase, spectrum.shape)
    shift[..., 0] = 0.0  # the mean stays real
    if x.shape[-1] % 2 == 0:
        shift[..., -1] = 0.0  # so does the Nyquist frequency of an even length
    return np.fft.irfft(spectrum * np.exp(1j * shift), n=x.shape[-1], axis=-1)


def _frequency_mask(x: np.ndarray, p: TimeSeriesParams, rng: np.random.Generator) -> np.ndarray:
    """A random band of frequencies (not the mean) zeroed, one band per series."""
    spectrum = np.fft.rfft(x, axis=-1)
    n_freq = spectrum.shape[-1]
    width = max(1, int(round(p.mask_share * (n_freq - 1))))
    start = rng.integers(1, max(2, n_freq - width + 1), len(x))
    band = np.arange(n_freq)[None, :]
    mask = (band >= start[:, None]) & (band < start[:, None] + width)
    spectrum[mask[:, None, :].repeat(x.shape[1], axis=1)] = 0
    return np.fft.irfft(spectrum, n=x.shape[-1], axis=-1)
