"""The default loss, validation metrics and inference latency of a trained module.

Predictions run batch by batch under ``no_grad`` and the precision policy's autocast,
through the model's own ``forward`` and ``loss``; the
metrics come from scikit-learn (accuracy, macro F1, ROC AUC — binary, or macro
one-vs-rest for several classes — and RMSE/MAE/R² for regression).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..components import Model, PrecisionPolicy


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default training loss, read off the targets: mean cross-entropy for class indices
    (int64, N) and soft targets (float, N x C), mean squared error for regression values."""
    import torch.nn.functional as F

    if not targets.is_floating_point() or targets.ndim == 2:
        return F.cross_entropy(outputs, targets)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = outputs.squeeze(1)
    return F.mse_loss(outputs.float(), targets)


def loss_function(classification: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The default loss picked once for a task, for the loop's per-step fast path."""
    import torch.nn.functional as F

    return F.cross_entropy if classification else task_loss


def predict(module: torch.nn.Module, model: Model, batches: Iterable[Mapping[str, torch.Tensor]],
            precision: PrecisionPolicy, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The module's float32 outputs and the targets over ``batches`` (on the CPU, in eval
    mode), with the model's mean loss per row."""
    import torch

    was_training = module.training
    module.eval()
    outs, targets, loss_sum = [], [], 0.0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with precision.autocast():
                    out = model.forward(module, batch)
                    loss_sum += float(model.loss(out, batch)) * len(batch["target"])
                outs.append(out.float().cpu())
                targets.append(batch["target"].cpu())
    finally:
        module.train(was_training)
    if not outs:
        return torch.empty(0), torch.empty(0), float("nan")
    target = torch.cat(targets)
    return torch.cat(outs), target, loss_sum / len(target)


def metrics_from_outputs(outputs: torch.Tensor, targets: torch.Tensor, classification: bool,
                         prefix: str = "val_") -> dict[str, float]:
    """Loss and task metrics of ``outputs`` against ``targets`` (both on the CPU)."""
    from sklearn import metrics as skm

    out: dict[str, float] = {f"{prefix}loss": float(task_loss(outputs, targets))}
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


def evaluate(module: torch.nn.Module, model: Model, batches: Iterable[Mapping[str, torch.Tensor]],
             classification: bool, precision: PrecisionPolicy, device: torch.device,
             prefix: str = "val_") -> dict[str, float]:
    """Validation metrics: the model's loss plus accuracy/F1/AUC or RMSE/MAE/R², and the
    model's own metrics."""
    outputs, targets, loss = predict(module, model, batches, precision, device)
    out = metrics_from_outputs(outputs, targets, classification, prefix)
    out[f"{prefix}loss"] = loss
    out.update({f"{prefix}{k}": float(v) for k, v in model.metrics(outputs, targets).items()})
    return out


def measure_latency(module: torch.nn.Module, model: Model, batch: Mapping[str, torch.Tensor],
                    precision: PrecisionPolicy, device: torch.device, warmup: int = 3,
                    repeats: int = 20) -> dict[str, float]:
    """Inference latency of one batch (p50/p95 ms) and throughput (samples/s)."""
    import torch

    rows = len(batch["target"])
    batch = {k: v.to(device) for k, v in batch.items()}
    if rows == 0:
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
                model.forward(module, batch)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        module.train(was_training)
    t = np.asarray(times)
    return {"latency_p50_ms": float(np.percentile(t, 50) * 1e3), "latency_p95_ms": float(np.percentile(t, 95) * 1e3),
            "throughput_samples_per_s": float(rows / np.median(t))}
