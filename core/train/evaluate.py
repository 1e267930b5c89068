"""Validation metrics and inference latency of a trained module.

Predictions run in batches under ``no_grad`` and the precision policy's autocast; the
metrics come from scikit-learn (accuracy, macro F1, ROC AUC — binary, or macro
one-vs-rest for several classes — and RMSE/MAE/R² for regression).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..components import PrecisionPolicy


def loss_function(classification: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss, picked once: mean cross-entropy (class indices or soft N x C
    targets) for classification, mean squared error for regression."""
    import torch.nn.functional as F

    if classification:
        return F.cross_entropy

    def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.ndim == 2 and outputs.shape[1] == 1:
            outputs = outputs.squeeze(1)
        return F.mse_loss(outputs.float(), targets)

    return mse


def task_loss(outputs: torch.Tensor, targets: torch.Tensor, classification: bool) -> torch.Tensor:
    """The training loss of ``outputs`` against ``targets`` (see :func:`loss_function`)."""
    return loss_function(classification)(outputs, targets)


def predict(module: torch.nn.Module, inputs: torch.Tensor, batch_size: int, precision: PrecisionPolicy,
            device: torch.device) -> torch.Tensor:
    """The module's float32 outputs for ``inputs``, on the CPU, in eval mode."""
    import torch

    was_training = module.training
    module.eval()
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                x = inputs[start:start + batch_size].to(device, non_blocking=True)
                with precision.autocast():
                    outs.append(module(x).float().cpu())
    finally:
        module.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def metrics_from_outputs(outputs: torch.Tensor, targets: torch.Tensor, classification: bool,
                         prefix: str = "val_") -> dict[str, float]:
    """Loss and task metrics of ``outputs`` against ``targets`` (both on the CPU)."""
    from sklearn import metrics as skm

    out: dict[str, float] = {f"{prefix}loss": float(task_loss(outputs, targets, classification))}
    if classification:
        y = targets.numpy()
        proba = outputs.softmax(dim=1).numpy().astype(np.float64)
        pred = proba.argmax(axis=1)
        out[f"{prefix}accuracy"] = float(skm.accuracy_score(y, pred))
        out[f"{prefix}f1"] = float(skm.f1_score(y, pred, average="macro", labels=np.arange(proba.shape[1]),
                                                zero_division=0))
        present = np.unique(y)
        # AUC is undefined when the validation split holds a single class
        if len(present) > 1:
            if proba.shape[1] == 2:
                out[f"{prefix}auc"] = float(skm.roc_auc_score(y, proba[:, 1]))
            elif len(present) == proba.shape[1]:
                out[f"{prefix}auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    else:
        y = targets.numpy().astype(np.float64)
        pred = outputs.reshape(len(y), -1)[:, 0].numpy().astype(np.float64)
        out[f"{prefix}rmse"] = float(np.sqrt(skm.mean_squared_error(y, pred)))
        out[f"{prefix}mae"] = float(skm.mean_absolute_error(y, pred))
        out[f"{prefix}r2"] = float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan")
    return out


def evaluate(module: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, classification: bool,
             batch_size: int, precision: PrecisionPolicy, device: torch.device) -> dict[str, float]:
    """Validation metrics: ``val_loss`` plus accuracy/F1/AUC or RMSE/MAE/R²."""
    return metrics_from_outputs(predict(module, inputs, batch_size, precision, device), targets, classification)


def measure_latency(module: torch.nn.Module, inputs: torch.Tensor, batch_size: int, precision: PrecisionPolicy,
                    device: torch.device, warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Inference latency per batch of ``batch_size`` (p50/p95 ms) and throughput (samples/s)."""
    import torch

    batch = inputs[:batch_size].to(device)
    if len(batch) == 0:
        return {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = module.training
    module.eval()
    times = []
    try:
        with torch.no_grad(), precision.autocast():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                module(batch)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        module.train(was_training)
    t = np.asarray(times)
    return {"latency_p50_ms": float(np.percentile(t, 50) * 1e3), "latency_p95_ms": float(np.percentile(t, 95) * 1e3),
            "throughput_samples_per_s": float(len(batch) / np.median(t))}
