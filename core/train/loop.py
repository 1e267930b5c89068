"""The training loop forgeline owns: ``fit(job) -> TrainResult``.

Plugins shape it — the model (its inputs, and optionally its own ``forward`` and ``loss``),
the precision policy (autocast, loss scaling, the optimizer step), the parallel strategy
(wrapping, sharding, ``no_sync``, reductions, gradient norms), augmenters acting on batches
and lifecycle hooks — while the loop itself stays a plain PyTorch loop, and reads nothing of
a plugin that its protocol does not declare. The per-step path does no host-device
synchronisation and builds no records except on logging steps, and a lifecycle hook nobody
implements is never called, so the loop costs what a hand-written loop costs
(``benchmarks/train_overhead.py`` measures it).

:class:`Trainer` holds one training run; each of its methods is one part of the loop:
resuming, a micro-batch, an optimizer step, logging, checkpointing, the end of an epoch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..components import DataSpec, Model, ParallelStrategy, PrecisionPolicy, StepInfo
from ..data import Modality, Table
from ..errors import InputError
from . import TrainJob, TrainResult
from .batches import SINGLE_INPUT, TARGET, Batch, Source, batch_source, encode_targets
from .checkpoint import Position, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .evaluate import evaluate, loss_function, measure_latency
from .optim import build_optimizer, build_scheduler
from .shards import ParquetSplit, ShardSource
from .threads import ThreadBudget

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["fit", "resolve_device", "encode_targets", "seed_everything", "latest_checkpoint", "evaluate_table"]


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


def _main_modality(table: Table) -> Modality:
    mods = table.schema.modalities
    for m in (Modality.VOLUME, Modality.IMAGE, Modality.SERIES, Modality.TEXT):
        if m in mods:
            return m
    return Modality.NUMERIC if mods <= {Modality.NUMERIC} or not mods else Modality.CATEGORICAL


def _has_impls(hooks: Any, name: str) -> bool:
    """Whether some plugin implements the lifecycle hook ``name`` (checked once, not per step)."""
    return hooks is not None and bool(getattr(hooks, name).get_hookimpls())


@dataclasses.dataclass
class Data:
    """The job's splits as batch sources, and what the model factory learns from them."""

    train: Source
    valid: Source | None
    spec: DataSpec

    @classmethod
    def prepare(cls, job: TrainJob) -> Data:
        """Fit the model's input encodings on the training split, then build the sources."""
        if len(job.train) == 0:
            raise InputError("train: the training split is empty")
        if isinstance(job.train, ParquetSplit):
            return cls.prepare_shards(job)
        model, loader = job.model, job.config.loader
        model.fit_inputs(job.train)
        online = [a for a in job.augmenters if a.online]
        train = batch_source(model, job.train, encode_targets(job.train, job.task, job.classes, "train"),
                             "train", loader, job.seed, online)
        valid = None
        if job.valid is not None and len(job.valid) > 0:
            valid = batch_source(model, job.valid, encode_targets(job.valid, job.task, job.classes, "validation"),
                                 "validation", loader, job.seed)
        return cls.of(job, train, valid)

    @classmethod
    def prepare_shards(cls, job: TrainJob) -> Data:
        """Splits read from their Parquet partitions: the encodings fitted on the same sample on
        every rank (:meth:`ParquetSplit.fit_sample`), this rank's shard of the training split,
        the whole validation split streamed (every rank scores it, so the mean over ranks is
        the split's own metric)."""
        model, loader, dist = job.model, job.config.loader, job.dist
        sample = job.train.fit_sample()
        model.fit_inputs(job.train.read(sample))
        online = [a for a in job.augmenters if a.online]
        train = ShardSource.open(job.train, dist.rank, dist.world_size, model, job, "train", loader, online)
        train.fitted_on = sum(len(p) for p in sample)
        valid = None
        if job.valid is not None and len(job.valid) > 0:
            valid = ShardSource.open(job.valid, 0, 1, model, job, "validation", loader)
        return cls.of(job, train, valid)

    @classmethod
    def of(cls, job: TrainJob, train: Source, valid: Source | None) -> Data:
        """The sources with the model factory's view of the training split."""
        shapes = {k: tuple(v.shape[1:]) for k, v in train.sample(1).items() if k != TARGET}
        spec = DataSpec(task=job.task, n_outputs=len(job.classes) if job.task == "classification" else 1,
                        input_shape=shapes.get(SINGLE_INPUT, ()), input_shapes=shapes,
                        feature_names=tuple(job.train.schema.features()), modality=_main_modality(job.train))
        return cls(train, valid, spec)


def fit(job: TrainJob) -> TrainResult:
    """Train ``job.model`` on ``job.train`` as ``job.config`` says; see the module docstring."""
    cfg = job.config
    seed_everything(job.seed)
    threads = ThreadBudget(cfg.threads)
    threads.start()
    device = resolve_device(cfg.device, job.dist)
    data = Data.prepare(job)
    base = job.module if job.module is not None else job.model.build(data.spec)

    # the parallel strategy joins the process group, then the precision policy sets up on its device
    precision, parallel = job.precision, job.parallel
    parallel.setup(dataclasses.replace(job.dist, device=device))
    try:
        device = _agree_on_device(device, parallel, cfg.device)
        why = precision.unsupported(device)
        if why:
            raise InputError(f"train.precision: {precision.name}: {why}")
        precision.setup(device)
        try:
            trainer = Trainer(job, data, base, device, threads)
            trainer.resume()
            return trainer.run()
        finally:
            precision.teardown()
    finally:
        parallel.teardown()


def _agree_on_device(device: torch.device, parallel: Any, choice: str) -> torch.device:
    """The device both ``train.device`` and the strategy's own choice (if it makes one) name."""
    import torch

    chosen = parallel.device
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


@dataclasses.dataclass
class Epoch:
    """Running state of one epoch: micro-batch losses (detached, read only when logging) and
    the counters of the current logging interval."""

    number: int
    prior: tuple[float, int] = (0.0, 0)  # loss sum and count of a resumed epoch's finished part
    losses: list = dataclasses.field(default_factory=list)
    logged: int = 0
    steps: int = 0
    samples: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)
    interval: float = dataclasses.field(default_factory=time.perf_counter)

    def loss_sum(self) -> tuple[float, int]:
        import torch

        done = float(torch.stack(self.losses).sum()) if self.losses else 0.0
        return self.prior[0] + done, self.prior[1] + len(self.losses)


class Trainer:
    """One training run on this process, built by :func:`fit` once the world is set up."""

    def __init__(self, job: TrainJob, data: Data, base: torch.nn.Module, device: torch.device,
                 threads: ThreadBudget) -> None:
        import torch

        cfg, self.job, self.cfg, self.data, self.base = job.config, job, job.config, data, base
        self.device, self.threads = device, threads
        self.dist = dataclasses.replace(job.dist, device=device)
        self.precision, self.parallel, self.model = job.precision, job.parallel, job.model
        data.train.to(device)
        self.fresh = _fresh_module(job, data.spec, base)
        self.wrapped = self.parallel.wrap(base.to(device), self.precision)
        self.module = torch.compile(self.wrapped) if cfg.compile else self.wrapped
        self.module.train()
        self.optimizer = build_optimizer(self.module.parameters(), cfg.optimizer, device)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        per_rank = len(self.epoch_order(0))
        self.micro_per_epoch = math.ceil(per_rank / cfg.batch_size)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / cfg.accumulate)
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, cfg.epochs * self.steps_per_epoch)
        self.generator = torch.Generator().manual_seed(job.seed)  # batch augmenters draw from it
        self.layout = {"batch_size": cfg.batch_size, "accumulate": cfg.accumulate,
                       "micro_batches_per_epoch": self.micro_per_epoch, "world_size": self.dist.world_size}
        self.position, self.resumed_loss = Position(0, 0, 0), (0.0, 0)
        self.mixers = [a for a in job.augmenters if a.per_batch]
        self.step_hook = _has_impls(job.hooks, "forgeline_train_step_ended")
        self.ckpt_dir = Path(job.checkpoint_dir) if job.checkpoint_dir is not None else None
        self.checkpoints: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.step = 0
        # per-step work trimmed to what a hand-written loop does: no copy when the data already
        # sits on the device, no autocast context for full-precision policies, the loss picked once
        plain = contextlib.nullcontext()  # reusable: entering it costs no allocation
        self.autocast = (self.precision.autocast if type(self.precision).autocast is not PrecisionPolicy.autocast
                         else lambda: plain)
        self.synced = plain
        self.move = data.train.device != device  # batches to copy to the device each step
        self.loss = job.loss or (job.model.loss if type(job.model).loss is not Model.loss
                                 else _default_loss(loss_function(job.task == "classification")))

    # ------------------------------------------------------------------ resume

    def resume(self) -> None:
        """Continue from ``job.resume_from``: weights, optimizer, scaler, schedule, RNG, position."""
        if self.job.resume_from is None:
            return
        state = load_checkpoint(self.job.resume_from)
        if state["layout"] != self.layout:
            raise InputError(f"--resume: checkpoint {self.job.resume_from} was written with {state['layout']}, "
                             f"this run has {self.layout}; resume with the same batch_size, accumulate, data "
                             "and processes")
        self.parallel.load_model_state(self.wrapped, state["model"])
        self.parallel.load_optimizer_state(self.wrapped, self.optimizer, state["optimizer"])
        self.precision.load_state_dict(state["precision"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], self.generator)
        self.position = Position(**state["position"])
        self.resumed_loss = (state["epoch_loss_sum"], state["epoch_micro_batches"])

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        self.step = self.position.step
        self.advance = self.job.stage.progress(f"training {self.cfg.epochs} epoch(s)",
                                               self.cfg.epochs * self.steps_per_epoch)
        self.advance(self.step)
        skipped_before = self.precision.skipped_steps
        started = time.perf_counter()
        for number in range(self.position.epoch, self.cfg.epochs):
            resumed = number == self.position.epoch
            for aug in self.job.augmenters:  # schedules over epochs (progressive resolution, ...)
                aug.set_epoch(number, self.cfg.epochs)
            epoch = Epoch(number, self.resumed_loss if resumed else (0.0, 0))
            self.train_epoch(epoch, self.position.micro_batch if resumed else 0)
            self.end_epoch(epoch)
        return self.result(time.perf_counter() - started, self.precision.skipped_steps - skipped_before)

    def train_epoch(self, epoch: Epoch, first: int) -> None:
        """Micro-batches ``first`` .. end of the epoch, with an optimizer step at each window's end."""
        order = self.epoch_order(epoch.number)
        plan = self.windows(len(order))
        for mb, batch in enumerate(self.data.train.epoch(order, self.cfg.batch_size, epoch.number, first), start=first):
            rows, weight, window = plan[mb]
            epoch.losses.append(self.micro_batch(batch, weight, sync=window > 0))
            epoch.samples += rows
            if window:
                self.optimizer_step(epoch, window)
                if self.ckpt_dir is not None and self.cfg.checkpoint.every_steps and \
                        self.step % self.cfg.checkpoint.every_steps == 0:
                    self.checkpoint(Position(epoch.number, mb + 1, self.step), epoch)

    def epoch_order(self, number: int) -> np.ndarray:
        """This rank's positions for epoch ``number``: the source's own when it holds one rank's
        shard, else the strategy's share of the whole split."""
        if self.data.train.sharded:
            return self.data.train.order(number)
        return np.asarray(self.parallel.shard(self.data.train.rows, number, self.job.seed), dtype=np.int64)

    def windows(self, rows: int) -> list[tuple[int, float | None, int]]:
        """Per micro-batch of an epoch of ``rows`` rows: its rows, its loss weight and, for the
        last micro-batch of an accumulation window, the window's length (else 0).

        Each micro-batch's mean loss is weighed by its share of its window's rows, so a
        window of micro-batches of 8 and 6 rows equals one batch of 14 (strategies give every
        rank the same number of rows, so the share is the same across ranks). Worked out once
        per epoch, so the per-step path does no array arithmetic."""
        bs, accumulate = self.cfg.batch_size, self.cfg.accumulate
        sizes = np.minimum(bs, rows - np.arange(self.micro_per_epoch) * bs)
        plan = []
        for start in range(0, len(sizes), accumulate):
            window = sizes[start:start + accumulate]
            for i, size in enumerate(window.tolist()):
                weight = None if len(window) == 1 else size / float(window.sum())
                plan.append((size, weight, len(window) if i == len(window) - 1 else 0))
        return plan

    def micro_batch(self, batch: Batch, weight: float | None, sync: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch; gradients stay local unless ``sync``."""
        if self.move:
            batch = self._on_device(batch)
        for mixer in self.mixers:
            batch = mixer.augment_batch(batch, self.generator, self.data.spec)
        with self.synced if sync else self.parallel.no_sync(self.wrapped):
            with self.autocast():
                loss = self.loss(self.model.forward(self.module, batch), batch)
            self.precision.backward(loss if weight is None else loss * weight)
        return loss.detach()

    def _on_device(self, batch: Batch) -> Batch:
        non_blocking = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=non_blocking) for k, v in batch.items()}

    def optimizer_step(self, epoch: Epoch, window: int) -> None:
        """Unscale, clip or measure the gradient norm, step (unless skipped), then log."""
        import torch

        self.step += 1
        epoch.steps += 1
        logging = self.step % self.cfg.log_every == 0
        self.precision.unscale(self.optimizer)
        grad_norm = None
        if self.cfg.grad_clip is not None or logging:
            grad_norm = self.parallel.grad_norm(self.params, self.cfg.grad_clip)
        stepped = self.precision.step(self.optimizer)
        for p in self.params:  # what zero_grad(set_to_none=True) does, less its ~7 µs of profiler wrapping
            p.grad = None
        if stepped and self.scheduler is not None:
            self.scheduler.step()
        if self.step_hook:
            self.job.hooks.forgeline_train_step_ended(run=self.job.run, step=StepInfo(
                step=self.step, epoch=epoch.number, loss=float(torch.stack(epoch.losses[-window:]).mean()),
                stepped=stepped))
        if logging:
            self.log_step(epoch, grad_norm)

    def log_step(self, epoch: Epoch, grad_norm: torch.Tensor | None) -> None:
        import torch

        # reading the loss waits for the device, so the interval timed below covers the
        # steps' device work too, not only their launch
        loss = float(torch.stack(epoch.losses[epoch.logged:]).mean())
        now = time.perf_counter()
        record = self.parallel.reduce({
            "loss": loss, "lr": float(self.optimizer.param_groups[0]["lr"]),
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "samples_per_s": epoch.samples * self.dist.world_size / (now - epoch.interval),
            "step_time_s": (now - epoch.interval) / epoch.steps, **self.precision.metrics()})
        self.job.log({"event": "step", "step": self.step, "epoch": epoch.number, **record})
        self.advance(epoch.steps)
        epoch.interval, epoch.steps, epoch.samples, epoch.logged = time.perf_counter(), 0, 0, len(epoch.losses)

    def end_epoch(self, epoch: Epoch) -> None:
        """Validation, the epoch record, the epoch hook, a checkpoint."""
        self.advance(epoch.steps)
        loss_sum, count = epoch.loss_sum()
        seconds = time.perf_counter() - epoch.started  # after reading the losses: device work included
        metrics = {"train_loss": loss_sum / max(count, 1)}
        if self.data.valid is not None:
            metrics.update(self.evaluate(self.data.valid))
        metrics = self.parallel.reduce(metrics)
        record = {"event": "epoch", "epoch": epoch.number, "step": self.step, **metrics, "epoch_time_s": seconds,
                  "comm_share": self.parallel.comm_share(), "threads": self.threads.threads, **self.precision.metrics()}
        self.threads.adjust()  # another job may have started or stopped on this machine
        self.job.log(record)
        self.history.append(record)
        if self.job.hooks is not None:
            self.job.hooks.forgeline_epoch_ended(run=self.job.run, epoch=epoch.number, metrics=metrics)
        if self.ckpt_dir is not None:
            self.checkpoint(Position(epoch.number + 1, 0, self.step), Epoch(epoch.number))

    def evaluate(self, source: Source, prefix: str = "val_") -> dict[str, float]:
        return evaluate(self.module, self.model, _in_order(source, self.cfg.batch_size),
                        self.job.task == "classification", self.precision, self.device, prefix)

    def checkpoint(self, position: Position, epoch: Epoch) -> None:
        """Gather the (sharded) states on every rank; rank 0 writes them."""
        model_state = self.parallel.model_state(self.wrapped)
        optim_state = self.parallel.optimizer_state(self.wrapped, self.optimizer)
        if not self.dist.is_main:
            return
        loss_sum, count = epoch.loss_sum()
        path = save_checkpoint(self.ckpt_dir, {
            "model": model_state, "optimizer": optim_state, "precision": self.precision.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng_state(self.generator), "position": dataclasses.asdict(position), "layout": self.layout,
            "epoch_loss_sum": loss_sum, "epoch_micro_batches": count,
        }, position.step, self.cfg.checkpoint.keep)
        if str(path) in self.checkpoints:  # a step checkpoint rewritten at the epoch's end
            self.checkpoints.remove(str(path))
        self.checkpoints.append(str(path))
        if self.job.hooks is not None:
            self.job.hooks.forgeline_checkpoint_saved(run=self.job.run, path=path, step=position.step)

    # ------------------------------------------------------------------ the result

    def result(self, train_time: float, skipped: int) -> TrainResult:
        final = {k: v for k, v in (self.history[-1] if self.history else {}).items() if k.startswith("val_")}
        if self.data.valid is not None:
            latency = measure_latency(self.module, self.model, self.data.valid.sample(self.cfg.batch_size),
                                      self.precision, self.device)
            self.job.log({"event": "latency", **latency})
            final.update(latency)
        module = self.parallel.unwrap(self.wrapped, self.fresh)
        cfg, world = self.cfg, self.dist.world_size
        report = {
            "device": str(self.device), "precision": self.precision.name, "parallel": getattr(self.parallel, "name", "single"),
            "threads": self.threads.threads, "epochs": cfg.epochs, "steps": self.step, "skipped_steps": skipped,
            "micro_batches_per_epoch": self.micro_per_epoch, "steps_per_epoch": self.steps_per_epoch,
            "effective_batch": cfg.batch_size * cfg.accumulate * world,
            "streamed": self.data.train.streaming, "loader_workers": cfg.loader.workers,
            "parameters": sum(p.numel() for p in self.base.parameters()), "train_time_s": train_time,
            "resumed_from": str(self.job.resume_from) if self.job.resume_from else None,
            "checkpoints": self.checkpoints[-cfg.checkpoint.keep:], "history": self.history,
        }
        if self.data.train.sharded:  # what this rank read (the train stage gathers every rank's)
            report["shard"] = {**self.data.train.record(), "inputs_fitted_on_rows": self.data.train.fitted_on,
                               "steps": self.step}
        return TrainResult(module=module, metrics=final, steps=self.step, report=report)


def _fresh_module(job: TrainJob, spec: DataSpec, base: torch.nn.Module) -> Callable[[], torch.nn.Module]:
    """What a sharding strategy gathers the trained weights into: a new module like ``base``."""
    if job.module is None:
        return lambda: job.model.build(spec)
    if type(job.parallel).unwrap is ParallelStrategy.unwrap:
        return lambda: base  # never called: the strategy unwraps the module it trained
    original = copy.deepcopy(base)  # taken before sharding changes the module in place
    return lambda: copy.deepcopy(original)


def _default_loss(loss_fn: Callable[[Any, Any], Any]) -> Callable[[Any, Batch], Any]:
    """The task loss on ``batch["target"]``, picked once (what ``Model.loss`` does by default)."""
    def loss(outputs: Any, batch: Batch) -> Any:
        return loss_fn(outputs, batch[TARGET])
    return loss


def _in_order(source: Source, batch_size: int) -> Iterator[Batch]:
    return source.epoch(np.arange(source.rows), batch_size, 0)


def evaluate_table(module: torch.nn.Module, job: TrainJob, table: Table, prefix: str) -> dict[str, float]:
    """Metrics of a trained module on another split (e.g. the test split), batch by batch."""
    import torch

    targets = encode_targets(table, job.task, job.classes, prefix.rstrip("_"))
    source = batch_source(job.model, table, targets, prefix.rstrip("_"), job.config.loader, job.seed)
    device = next(module.parameters(), torch.empty(0)).device
    return evaluate(module, job.model, _in_order(source, job.config.batch_size), job.task == "classification",
                    job.precision, device, prefix)
