"""The training loop forgeline owns: ``fit(job) -> TrainResult``.

Plugins shape it — the precision policy (autocast, loss scaling, the optimizer step), the
parallel strategy (wrapping, sharding, ``no_sync``, reductions), the model, batch augmenters
and lifecycle hooks — while the loop itself stays a plain PyTorch loop. The per-step path
does no host-device synchronisation and builds no records except on logging steps, and a
lifecycle hook nobody implements is never called, so the loop costs what a hand-written
loop costs (``benchmarks/train_overhead.py`` measures it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..components import DataSpec, PrecisionPolicy, StepInfo
from ..data import Modality, Table
from ..errors import InputError
from . import TrainJob, TrainResult
from .checkpoint import Position, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .evaluate import evaluate, loss_function, measure_latency
from .optim import build_optimizer, build_scheduler

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["fit", "resolve_device", "encode_targets", "seed_everything", "latest_checkpoint"]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's ``random``."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def resolve_device(choice: str, dist: Any) -> torch.device:
    """``auto``: CUDA when available, else CPU; on CUDA with several processes, ``cuda:local_rank``."""
    import torch

    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise InputError("train.device: cuda was asked for but no CUDA GPU is visible; use device: auto or cpu")
        index = dist.local_rank if dist.world_size > 1 else torch.cuda.current_device()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def encode_targets(table: Table, task: str, classes: list[Any], split: str) -> torch.Tensor:
    """Class indices (int64, by position in ``classes``) or float32 regression targets."""
    import pandas as pd
    import torch

    y = table.y
    if y is None:
        raise InputError(f"train: the {split} split has no target column; set data.target")
    if y.isna().any():
        raise InputError(f"train: target column {y.name!r} has {int(y.isna().sum())} missing values in the "
                         f"{split} split; add a cleaner (e.g. drop or impute) before training")
    if task == "classification":
        codes = y.map({c: i for i, c in enumerate(classes)})
        if codes.isna().any():
            unknown = sorted(map(str, y[codes.isna()].unique()))[:5]
            raise InputError(f"train: target column {y.name!r} in the {split} split has values {unknown} "
                             f"that are not among the training classes {list(map(str, classes))[:10]}")
        return torch.from_numpy(codes.to_numpy(np.int64, copy=True))
    if not pd.api.types.is_numeric_dtype(y):
        raise InputError(f"train: regression target {y.name!r} has dtype {y.dtype} in the {split} split; "
                         "it must be numeric (or set the task to classification)")
    return torch.from_numpy(y.to_numpy(np.float32, copy=True))


def _model_inputs(job: TrainJob, table: Table, split: str) -> torch.Tensor:
    import torch

    x = job.model.inputs(table)
    if not isinstance(x, torch.Tensor) or len(x) != len(table):
        got = f"{type(x).__name__} of {len(x)} rows" if hasattr(x, "__len__") else type(x).__name__
        raise TypeError(f"model {job.model.name!r}: inputs() must return a tensor with one row per table row "
                        f"({len(table)} for the {split} split), got {got}")
    return x


def _main_modality(table: Table) -> Modality:
    mods = table.schema.modalities
    for m in (Modality.VOLUME, Modality.IMAGE, Modality.SERIES, Modality.TEXT):
        if m in mods:
            return m
    return Modality.NUMERIC if mods <= {Modality.NUMERIC} or not mods else Modality.CATEGORICAL


def _has_impls(hooks: Any, name: str) -> bool:
    """Whether some plugin implements the lifecycle hook ``name`` (checked once, not per step)."""
    return hooks is not None and bool(getattr(hooks, name).get_hookimpls())


def fit(job: TrainJob) -> TrainResult:
    """Train ``job.model`` on ``job.train`` as ``job.config`` says; see the module docstring."""
    cfg = job.config
    classification = job.task == "classification"
    seed_everything(job.seed)
    device = resolve_device(cfg.device, job.dist)

    # ---- data and model
    if len(job.train) == 0:
        raise InputError("train: the training split is empty")
    job.model.fit_inputs(job.train)
    x_train = _model_inputs(job, job.train, "train")
    y_train = encode_targets(job.train, job.task, job.classes, "train")
    has_valid = job.valid is not None and len(job.valid) > 0
    if has_valid:
        x_valid = _model_inputs(job, job.valid, "validation")
        y_valid = encode_targets(job.valid, job.task, job.classes, "validation")
    spec = DataSpec(task=job.task, n_outputs=len(job.classes) if classification else 1,
                    input_shape=tuple(x_train.shape[1:]),
                    feature_names=tuple(n for n in job.train.schema.features()),
                    modality=_main_modality(job.train))
    base = job.model.build(spec)

    # ---- parallel strategy (joins the process group), then the precision policy on its device
    precision, parallel = job.precision, job.parallel
    parallel.setup(dataclasses.replace(job.dist, device=device))
    try:
        device = _agree_on_device(device, parallel, cfg.device)
        dist = dataclasses.replace(job.dist, device=device)
        why = precision.unsupported(device)
        if why:
            raise InputError(f"train.precision: {precision.name}: {why}")
        precision.setup(device)
        try:
            return _train(job, cfg, base, spec, device, dist, classification, x_train, y_train,
                          (x_valid, y_valid) if has_valid else None)
        finally:
            precision.teardown()
    finally:
        parallel.teardown()


def _agree_on_device(device: torch.device, parallel: Any, choice: str) -> torch.device:
    """The device both ``train.device`` and the strategy's own choice (if it makes one) name."""
    import torch

    chosen = getattr(getattr(parallel, "dist", None), "device", None)
    if chosen is None:
        return device
    chosen = torch.device(chosen)
    if chosen.type == device.type and (chosen.index is None or device.index is None or chosen.index == device.index):
        return device if device.index is not None or chosen.index is None else chosen
    if choice != "auto":
        raise InputError(f"train.device is {choice!r} but parallel strategy {getattr(parallel, 'name', '?')!r} "
                         f"runs on {chosen}; set train.device: auto or make them agree")
    if chosen.type == "cuda" and chosen.index is not None:
        torch.cuda.set_device(chosen)
    return chosen


def _train(job, cfg, base, spec, device, dist, classification, x_train, y_train, valid) -> TrainResult:
    import torch

    precision, parallel = job.precision, job.parallel
    x_train, y_train = _stage_on_device(x_train, y_train, device)
    wrapped = parallel.wrap(base.to(device), precision)
    module = torch.compile(wrapped) if cfg.compile else wrapped
    module.train()
    optimizer = build_optimizer(module.parameters(), cfg.optimizer, device)

    bs, accumulate = cfg.batch_size, cfg.accumulate
    per_rank = len(parallel.shard(len(job.train), 0, job.seed))
    micro_per_epoch = math.ceil(per_rank / bs)
    steps_per_epoch = math.ceil(micro_per_epoch / accumulate)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(job.seed)  # batch augmenters draw from it
    layout = {"batch_size": bs, "accumulate": accumulate, "micro_batches_per_epoch": micro_per_epoch,
              "world_size": dist.world_size}

    # ---- resume
    pos = Position(0, 0, 0)
    resumed_loss = (0.0, 0)  # loss sum and micro-batch count of the resumed epoch's finished part
    if job.resume_from is not None:
        state = load_checkpoint(job.resume_from)
        if state["layout"] != layout:
            raise InputError(f"--resume: checkpoint {job.resume_from} was written with {state['layout']}, "
                             f"this run has {layout}; resume with the same batch_size, accumulate, data and processes")
        parallel.load_model_state(wrapped, state["model"])
        parallel.load_optimizer_state(wrapped, optimizer, state["optimizer"])
        precision.load_state_dict(state["precision"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], generator)
        pos = Position(**state["position"])
        resumed_loss = (state["epoch_loss_sum"], state["epoch_micro_batches"])

    hooks, run = job.hooks, job.run
    step_hook = _has_impls(hooks, "forgeline_train_step_ended")
    ckpt_dir = Path(job.checkpoint_dir) if job.checkpoint_dir is not None else None
    ckpt_every = cfg.checkpoint.every_steps if ckpt_dir is not None else None
    checkpoints: list[str] = []

    def checkpoint(position: Position, losses: list, prior: tuple[float, int]) -> None:
        # gathering (sharded) states is collective: every rank takes part, rank 0 writes
        model_state = parallel.model_state(wrapped)
        optim_state = parallel.optimizer_state(wrapped, optimizer)
        if not dist.is_main:
            return
        loss_sum = prior[0] + (float(torch.stack(losses).sum()) if losses else 0.0)
        path = save_checkpoint(ckpt_dir, {
            "model": model_state, "optimizer": optim_state, "precision": precision.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(generator), "position": dataclasses.asdict(position), "layout": layout,
            "epoch_loss_sum": loss_sum, "epoch_micro_batches": prior[1] + len(losses),
        }, position.step, cfg.checkpoint.keep)
        checkpoints.append(str(path))
        if hooks is not None:
            hooks.forgeline_checkpoint_saved(run=run, path=path, step=position.step)

    params = [p for p in module.parameters() if p.requires_grad]
    augmenters = list(job.batch_augmenters)
    # per-step work trimmed to what a hand-written loop does: no copy when the data already
    # sits on the device, no autocast context for full-precision policies, the loss picked once
    copy_batches = x_train.device != device
    non_blocking = device.type == "cuda"
    autocast = (precision.autocast if type(precision).autocast is not PrecisionPolicy.autocast
                else contextlib.nullcontext)
    loss_fn = getattr(job.model, "train_loss", None) or loss_function(classification)  # compression fine-tunes
    log_every, clip = cfg.log_every, cfg.grad_clip
    advance = job.stage.progress(f"training {cfg.epochs} epoch(s)", cfg.epochs * steps_per_epoch)
    advance(pos.step)
    step = pos.step
    skipped_before = _skipped(precision)
    history: list[dict[str, Any]] = []
    t_train = time.perf_counter()

    for epoch in range(pos.epoch, cfg.epochs):
        order = torch.from_numpy(np.asarray(parallel.shard(len(job.train), epoch, job.seed), dtype=np.int64))
        order = order.to(x_train.device)
        first_mb = pos.micro_batch if epoch == pos.epoch else 0
        prior = resumed_loss if epoch == pos.epoch else (0.0, 0)
        losses: list[torch.Tensor] = []  # detached micro-batch losses: no sync until they are read
        t_log, steps_since, samples_since, losses_logged = time.perf_counter(), 0, 0, 0
        t_epoch = t_log
        for mb in range(first_mb, micro_per_epoch):
            window_start = mb - mb % accumulate
            window_len = min(accumulate, micro_per_epoch - window_start)
            window_end = mb == window_start + window_len - 1
            idx = order[mb * bs:(mb + 1) * bs]
            x, y = x_train[idx], y_train[idx]
            for aug in augmenters:
                x, y = aug.augment_batch(x, y, generator)
            if copy_batches:
                x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            if window_end:
                with autocast():
                    loss = loss_fn(module(x), y)
                precision.backward(loss / window_len if window_len > 1 else loss)
            else:  # gradients stay local until the window's last micro-batch
                with parallel.no_sync(wrapped):
                    with autocast():
                        loss = loss_fn(module(x), y)
                    precision.backward(loss / window_len)
            losses.append(loss.detach())
            samples_since += len(idx)
            if not window_end:
                continue

            # ---- optimizer step at the window's end
            step += 1
            steps_since += 1
            logging = step % log_every == 0
            precision.unscale(optimizer)
            grad_norm = None
            if clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            elif logging:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            stepped = precision.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            if stepped and scheduler is not None:
                scheduler.step()
            if step_hook:
                hooks.forgeline_train_step_ended(run=run, step=StepInfo(
                    step=step, epoch=epoch, loss=float(torch.stack(losses[-window_len:]).mean()), stepped=stepped))
            if logging:
                # reading the loss waits for the device, so the interval timed below covers
                # the steps' device work too, not only their launch
                loss_value = float(torch.stack(losses[losses_logged:]).mean())
                now = time.perf_counter()
                record = parallel.reduce({
                    "loss": loss_value,
                    "lr": float(optimizer.param_groups[0]["lr"]),
                    "grad_norm": _scalar(grad_norm),
                    "samples_per_s": samples_since * dist.world_size / (now - t_log),
                    "step_time_s": (now - t_log) / steps_since,
                    **precision.metrics()})
                job.log({"event": "step", "step": step, "epoch": epoch, **record})
                advance(steps_since)
                t_log, steps_since, samples_since, losses_logged = time.perf_counter(), 0, 0, len(losses)
            if ckpt_every is not None and step % ckpt_every == 0:
                checkpoint(Position(epoch, mb + 1, step), losses, prior)

        # ---- epoch end: validation, record, hook, checkpoint
        advance(steps_since)
        n_losses = prior[1] + len(losses)
        train_loss = (prior[0] + (float(torch.stack(losses).sum()) if losses else 0.0)) / max(n_losses, 1)
        epoch_time = time.perf_counter() - t_epoch  # after reading the losses: device work included
        metrics = {"train_loss": train_loss}
        if valid is not None:
            metrics.update(evaluate(module, valid[0], valid[1], classification, bs, precision, device))
        metrics = parallel.reduce(metrics)
        record = {"event": "epoch", "epoch": epoch, "step": step, **metrics, "epoch_time_s": epoch_time,
                  "comm_share": parallel.comm_share(), **precision.metrics()}
        job.log(record)
        history.append(record)
        if hooks is not None:
            hooks.forgeline_epoch_ended(run=run, epoch=epoch, metrics=metrics)
        if ckpt_dir is not None:
            checkpoint(Position(epoch + 1, 0, step), [], (0.0, 0))

    train_time = time.perf_counter() - t_train
    final = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
    if valid is not None:
        latency = measure_latency(module, valid[0], bs, precision, device)
        job.log({"event": "latency", **latency})
        final.update(latency)
    result_module = _full_module(job, spec, base, wrapped, parallel)
    report = {
        "device": str(device), "precision": precision.name, "parallel": getattr(parallel, "name", "single"),
        "epochs": cfg.epochs, "steps": step, "skipped_steps": _skipped(precision) - skipped_before,
        "micro_batches_per_epoch": micro_per_epoch, "steps_per_epoch": steps_per_epoch,
        "effective_batch": bs * accumulate * dist.world_size, "parameters": sum(p.numel() for p in base.parameters()),
        "train_time_s": train_time, "resumed_from": str(job.resume_from) if job.resume_from else None,
        "checkpoints": checkpoints[-cfg.checkpoint.keep:], "history": history,
    }
    return TrainResult(module=result_module, metrics=final, steps=step, report=report)


def _stage_on_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """On CUDA, keep the training tensors on the GPU when they take under a quarter of its free
    memory (no host-to-device copy per step); otherwise pin them so copies run asynchronously."""
    import torch

    if device.type != "cuda":
        return x, y
    free, _ = torch.cuda.mem_get_info(device)
    if x.nbytes + y.nbytes <= free // 4:
        return x.to(device), y.to(device)
    return x.pin_memory(), y.pin_memory()


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "full_tensor"):  # a DTensor norm under FSDP
        value = value.full_tensor()
    return float(value)


def _skipped(precision: Any) -> int:
    return int(getattr(precision, "skipped_steps", 0))


def _full_module(job: TrainJob, spec: DataSpec, base: torch.nn.Module, wrapped: torch.nn.Module,
                 parallel: Any) -> torch.nn.Module:
    """The trained module, unwrapped, with full weights (gathered when the strategy shards them)."""
    state = parallel.model_state(wrapped)  # collective under sharding strategies
    if not any(type(p).__name__ == "DTensor" for p in base.parameters()):
        return base
    full = job.model.build(spec)
    full.load_state_dict(state)
    return full
