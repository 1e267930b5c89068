"""Base protocols of the ten component kinds.

A component is a class with a kebab-case ``name`` (unique within its kind), a one-line
summary (the docstring's first line) and a pydantic ``Params`` model whose fields are what
the pipeline file's ``with:`` accepts. Subclass the base of your kind and implement the
methods it documents; the conformance kit (``forgeline.registry.conformance``) checks them.

Nothing heavy is imported here: torch, pandas and scikit-learn types appear only in hints.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict

from .data import ColumnSpec, Modality, Role, Schema, Table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from .partitioned import Partitioned

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class Kind(StrEnum):
    """The ten kinds of component, each with its registration hook and pipeline section."""

    CLEANER = "cleaner"
    AUGMENTER = "augmenter"
    FEATURE_TRANSFORM = "feature-transform"
    PARALLEL_STRATEGY = "parallel-strategy"
    PRECISION_POLICY = "precision-policy"
    TUNER = "tuner"
    COMPRESSOR = "compressor"
    MODEL = "model"
    DATASET = "dataset"
    MONITOR = "monitor"

    @property
    def hook(self) -> str:
        """The registration hook (from the kind table, ``forgeline.core.kinds``)."""
        from .kinds import spec_of
        return spec_of(self).hook

    @property
    def section(self) -> str:
        from .kinds import spec_of
        return spec_of(self).section


class Params(BaseModel):
    """Base of every component's parameter model: unknown keys are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoParams(Params):
    """For components that take no parameters."""


@dataclass
class StageContext:
    """What a stage may use besides its data: seed, a folder for its artifacts, logging, progress.

    Components used on their own (outside a run) get ``StageContext.standalone()``.
    """

    seed: int = 0
    artifacts: Path | None = None  # a folder of the run for this stage's files (None outside a run)
    log: Callable[[Mapping[str, Any]], None] = lambda record: None
    progress: Callable[[str, int | None], Callable[[int], None]] = lambda desc, total: (lambda n: None)
    rank: int = 0
    world_size: int = 1

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    @classmethod
    def standalone(cls, seed: int = 0) -> StageContext:
        return cls(seed=seed)


class Component:
    """Base of every component: a name, a summary, typed parameters."""

    kind: ClassVar[Kind]
    name: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    #: feature modalities this component accepts; empty means any
    modalities: ClassVar[frozenset[Modality]] = frozenset()

    def __init__(self, params: Params | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(params, self.Params):
            self.params = params.model_copy(update=kwargs) if kwargs else params
        else:
            self.params = self.Params.model_validate({**dict(params or {}), **kwargs})

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    # scikit-learn's clone/get_params protocol, so components drop into sklearn tooling
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return self.params.model_dump()

    def set_params(self, **params: Any) -> Component:
        self.params = self.params.model_copy(update=self.Params.model_validate(
            {**self.params.model_dump(), **params}).model_dump())
        return self

    # ----------------------------------------------------------------- the stage context

    @property
    def context(self) -> StageContext:
        """The context of the stage running this component: seed, artifacts folder, logging.

        Always there: the runner binds the stage's context before calling the component;
        outside a run it is ``StageContext.standalone()``.
        """
        return self.__dict__.get("_context") or StageContext.standalone()

    def bind(self, context: StageContext | None) -> Component:
        """Use ``context`` from now on (the runner calls it; ``None`` goes back to standalone)."""
        self.__dict__["_context"] = context
        return self

    def using(self, ctx: StageContext | None) -> StageContext:
        """``ctx`` when a caller passed one, else :attr:`context` (for methods taking ``ctx=None``)."""
        return ctx if ctx is not None else self.context

    def __getstate__(self) -> dict[str, Any]:
        # the context holds the run's monitors and folders: never part of a saved component
        state = self.__dict__.copy()
        state.pop("_context", None)
        return state

    def state(self) -> dict[str, Any]:
        """Fitted state as data, saved with the run (``forgeline.core.state``): by default the
        ``_``-suffixed instance attributes, which must hold only plain values, numpy arrays,
        pandas objects or fitted scikit-learn estimators. Override with :meth:`load_state`."""
        from .state import fitted_attributes
        return fitted_attributes(self)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned, on a fresh instance built with the same parameters."""
        for key, value in state.items():
            if not (isinstance(key, str) and key.endswith("_") and not key.startswith("_")):
                raise ValueError(f"{type(self).__name__}: {key!r} is not a fitted attribute (name_)")
            setattr(self, key, value)

    def __sklearn_clone__(self) -> Component:
        """An unfitted copy with equal parameters, for ``sklearn.base.clone``.

        sklearn's default clone checks ``get_params()`` values by identity, which fails for
        list/dict parameters because ``model_dump`` builds new objects each time."""
        return type(self)(self.params.model_copy(deep=True))


# --------------------------------------------------------------------------- data preparation

@dataclass
class CleanResult:
    """What a cleaner returns: the kept rows, the removed rows with reasons, and what it found.

    ``table``: the rows kept (values possibly changed: clipped, imputed, relabelled), with
    labels and row ids. ``removed``: the removed rows as they came in (indexed by row id) plus
    a ``reason`` column; rows in == rows kept + rows removed. ``flagged``: row ids the cleaner
    detected as faulty, whether removed, changed or only flagged (used for precision/recall
    against a dataset's ground truth). ``report``: counts and statistics for the run report.
    """

    table: Table
    removed: pd.DataFrame
    flagged: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    report: dict[str, Any] = field(default_factory=dict)

    def accounting_problem(self, before: Table) -> str | None:
        """Why this result breaks the row accounting of cleaning ``before``, or None.

        Rows in = rows kept + rows removed, no row id invented, lost or counted twice, and
        every removed row has a reason. The runner and the conformance kit both check this.
        """
        kept, gone = self.table.row_ids, np.asarray(self.removed.index)
        ids_in = before.row_ids
        if len(kept) + len(gone) != len(ids_in):
            return f"{len(ids_in)} rows in, {len(kept)} kept + {len(gone)} removed"
        # sorted arrays, not Python sets: a 125,000-row partition is checked in ~5 ms, not ~60
        if not np.array_equal(np.sort(np.concatenate([kept, gone])), np.sort(ids_in)):
            if len(np.unique(kept)) != len(kept) or np.intersect1d(kept, gone).size:
                return "a row id is kept twice, or both kept and removed"
            return "row ids changed (kept + removed are not the input's row ids)"
        if "reason" not in self.removed.columns or self.removed["reason"].isna().any():
            return "every removed row needs a 'reason' column value"
        return None


class Cleaner(Component):
    """Fits on the training split, then applies to any split."""

    kind = Kind.CLEANER
    #: column of ``table.meta["ground_truth"]`` this cleaner's ``flagged`` is scored against
    detects: ClassVar[str | None] = None

    def fit(self, table: Table, ctx: StageContext | None = None) -> Cleaner:
        raise NotImplementedError

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        raise NotImplementedError

    def fit_apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        """Fit on ``table`` and clean it; override when fitting already computes the result."""
        return self.fit(table, ctx).apply(table, ctx)

    # -- engine dask (``data.engine: dask``): a cleaner runs there in one of three ways
    #: (1) fitting needs no whole-split statistics (a row filter, a per-row fix): the engine
    #: fits on the training split's first partition and runs ``apply`` on every partition
    partition_wise: ClassVar[bool] = False

    def fit_partitions(self, parts: Partitioned, ctx: StageContext | None = None) -> Cleaner:
        """(2) Fit the whole-split statistics by passes over ``parts`` (the training split, read
        partition by partition: ``forgeline.core.partitioned``); the engine then runs ``apply``
        on each partition alone, so ``apply`` must treat rows independently."""
        raise NotImplementedError

    def clean_partitions(self, parts: Partitioned, ctx: StageContext | None = None, *,
                         fit: bool = False) -> PartitionPlan:
        """(3) A Dask implementation: look at the whole split ``parts`` (and fit on it when
        ``fit``: the training split) and return the :class:`PartitionPlan` the engine runs on
        each of its partitions (rows dropped across partitions, a shared decision...)."""
        raise NotImplementedError

    def partitions_refusal(self) -> str | None:
        """Why this cleaner, with its parameters, cannot run on engine dask (None: it can).
        Validation refuses ``engine: dask`` with this reason; override to refuse some settings."""
        base = Cleaner
        if self.partition_wise or any(getattr(type(self), m) is not getattr(base, m)
                                      for m in ("fit_partitions", "clean_partitions")):
            return None
        return ("it cannot run on partitions: it neither declares partition_wise nor implements "
                "fit_partitions or clean_partitions (use engine: pandas)")


@dataclass
class PartitionPlan:
    """What a cleaner's ``clean_partitions`` decided for one split: ``apply(table)`` cleans one
    partition of it (a :class:`CleanResult` under the same row accounting), ``report`` goes
    into the stage's report."""

    apply: Callable[[Table], CleanResult]
    report: dict[str, Any] = field(default_factory=dict)


class Augmenter(Component):
    """Adds synthetic training rows (per sample) and/or mixes batches inside the training loop.

    Offline (``per_sample`` and not ``online``): ``augment`` returns *new* rows only; their
    frame index holds the row id each new row was made from (repeats allowed). The runner
    gives them fresh row ids and records provenance. Online (``online`` is True): the
    training data loader calls ``transform_rows`` on each batch's rows, fresh every epoch.
    Batch-level (``per_batch``): ``augment_batch`` mixes each training batch on its device.
    Augmenters only ever see the training split.
    """

    kind = Kind.AUGMENTER
    per_sample: ClassVar[bool] = True
    per_batch: ClassVar[bool] = False

    @property
    def online(self) -> bool:
        """Whether this augmenter transforms rows inside the data loader instead of adding rows."""
        return False

    def augment(self, table: Table, ctx: StageContext | None = None) -> Table:
        raise NotImplementedError

    def transform_rows(self, table: Table, rng: np.random.Generator) -> Table:
        """The same rows (same ids, same order) with augmented values (online mode).

        ``rng`` is seeded from (seed, epoch, batch number): draw every random choice from it."""
        raise NotImplementedError

    def augment_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                      spec: DataSpec) -> dict[str, torch.Tensor]:
        """Mix a training batch (CutMix/MixUp) on its device; ``batch["target"]`` may become
        soft (N x ``spec.n_outputs``). Draw random numbers from ``generator`` only."""
        return batch

    @classmethod
    def from_config(cls, section: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """An augmentation config in the shape users already write (``{"text_augmentation":
        {...}, "image_augmentation": {...}}``): the ``with:`` this augmenter takes from the
        ``section`` named, and the keys it left; None when the section is not for it."""
        return None

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the training loop before each epoch (0-based, of ``epochs``) on the
        augmenters acting inside training, so a schedule (progressive patch size or resolution, a curriculum) can
        change what ``augment_batch`` feeds the model. No-op by default."""


class FeatureTransform(Component):
    """A scikit-learn transformer over the table's feature columns (``fit``/``transform``/
    ``get_feature_names_out``), so it also drops into an sklearn ``Pipeline``.

    ``fit`` receives the :class:`~forgeline.core.data.Schema` of ``X``'s columns (role and
    modality of each; ``None`` inside a plain sklearn ``Pipeline``: call
    :meth:`input_schema` to get it inferred), and :meth:`output_schema` says what each output
    column is, so a transform can produce categorical or text columns, not only numbers.
    """

    kind = Kind.FEATURE_TRANSFORM

    def fit(self, X: pd.DataFrame, y: pd.Series | None = None, schema: Schema | None = None) -> FeatureTransform:
        raise NotImplementedError

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """New feature frame with the same index (row ids)."""
        raise NotImplementedError

    def fit_transform(self, X: pd.DataFrame, y: pd.Series | None = None, schema: Schema | None = None) -> pd.DataFrame:
        return self.fit(X, y, schema=schema).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        raise NotImplementedError

    def fit_with_schema(self, X: pd.DataFrame, y: pd.Series | None, schema: Schema) -> FeatureTransform:
        """``fit(X, y, schema=schema)``; transforms written before ``fit`` took the schema get ``fit(X, y)``."""
        import inspect

        params = inspect.signature(self.fit).parameters
        if "schema" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return self.fit(X, y, schema=schema)
        return self.fit(X, y)

    def input_schema(self, X: pd.DataFrame, schema: Schema | None = None) -> Schema:
        """The schema ``fit`` was given (or one inferred from ``X``), kept as ``input_schema_``
        so that :meth:`output_schema` can keep the specs of the columns passed through."""
        self.input_schema_ = schema if schema is not None else Schema.infer(X)
        return self.input_schema_

    def output_schema(self) -> Schema:
        """The spec of every output column (role FEATURE, a modality), in output order.

        Default: an output named like an input column keeps that column's spec (when ``fit``
        called :meth:`input_schema`); every other output is a numeric feature. Override it
        when the transform makes categorical (or other non-numeric) columns.
        """
        known = {c.name: c for c in getattr(self, "input_schema_", Schema(())).columns}
        return Schema(tuple(known.get(str(n)) or ColumnSpec(str(n), Role.FEATURE, Modality.NUMERIC)
                             for n in self.get_feature_names_out()))

    def report(self) -> dict[str, Any]:
        """What the fitted transform did (kept/dropped features, scores) for the run report."""
        return {}

    def __sklearn_tags__(self) -> Any:
        """scikit-learn (>= 1.6) asks every step of a ``Pipeline`` for its tags; subclassing
        ``BaseEstimator`` would import sklearn at start-up, so the tags are built here, lazily."""
        from sklearn.utils import Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags())


# --------------------------------------------------------------------------- training

@dataclass(frozen=True)
class DataSpec:
    """What a model factory needs to know about its data (from the training split)."""

    task: str  # "classification" | "regression"
    n_outputs: int  # classes, or 1 for regression
    input_shape: tuple[int, ...]  # one sample's input shape as produced by ``Model.inputs`` (one tensor)
    feature_names: tuple[str, ...] = ()
    modality: Modality = Modality.NUMERIC
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. vocabulary size
    #: one sample's shape per named input (``{"x": input_shape}`` for a single tensor)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


class Model(Component):
    """Turns tables into tensors and builds the ``torch.nn.Module`` that learns from them.

    The training loop owns everything around the step (precision, accumulation,
    distribution, logging); a model may own the step itself by overriding ``forward`` (how
    a batch reaches the module) and ``loss`` (e.g. focal, weighted, multi-task). A batch is
    a mapping of named tensors: what ``inputs`` returns (one tensor is named ``"x"``) plus
    ``"target"``: class indices (int64, N), soft targets (float, N x classes, e.g. after
    CutMix/MixUp) or regression values (float, N).
    """

    kind = Kind.MODEL

    def fit_inputs(self, table: Table) -> None:
        """Learn input encodings (category levels, vocabulary) on the training split."""

    def inputs(self, table: Table) -> torch.Tensor | Mapping[str, torch.Tensor]:
        """The model inputs for a table: one tensor, or named tensors, one row per table row."""
        raise NotImplementedError

    def build(self, spec: DataSpec) -> torch.nn.Module:
        raise NotImplementedError

    def forward(self, module: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The module's outputs for a batch: ``module(batch["x"])`` for a single input, else
        ``module(inputs)`` with the mapping of named inputs (the target left out)."""
        if "x" in batch:
            return module(batch["x"])
        return module({k: v for k, v in batch.items() if k != "target"})

    def loss(self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The mean training loss of a batch: cross-entropy for class indices and soft targets,
        mean squared error for regression values."""
        from .train.evaluate import task_loss

        return task_loss(outputs, batch["target"])

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Extra validation metrics over a whole split (names without the ``val_`` prefix)."""
        return {}

    def evaluate(self, module: torch.nn.Module, table: Table, ctx: StageContext) -> dict[str, float]:
        """Domain metrics of the trained ``module`` on the held-out ``table`` (e.g. sensitivity,
        false alarms, latency of an exported copy); the runner adds them to the run's metrics
        with the split's prefix (``test_``). ``ctx.artifacts`` is a folder for files. None by default."""
        return {}


class PrecisionPolicy(Component):
    """Numeric precision of the training step: autocast, loss scaling, the optimizer step.

    Used per step as::

        with policy.autocast():
            loss = loss_fn(model(x), y)
        policy.backward(loss)            # scaled when the policy scales
        policy.unscale(optimizer)        # before reading or clipping gradients
        stepped = policy.step(optimizer) # False when the step was skipped (overflow)
    """

    kind = Kind.PRECISION_POLICY

    def unsupported(self, device: torch.device) -> str | None:
        """Why this policy cannot run on ``device`` (a validation error), or None."""
        return None

    def setup(self, device: torch.device) -> None:
        self.device = device

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """dtype of autocast regions (None: full precision); FSDP mixed precision reads it."""
        return None

    def autocast(self) -> AbstractContextManager:
        import contextlib
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale (no-op without loss scaling)."""

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        optimizer.step()
        return True

    def metrics(self) -> dict[str, float]:
        """E.g. ``loss_scale`` and ``skipped_steps``; logged every step."""
        return {}

    #: optimizer steps skipped so far (loss-scale overflows); stays 0 for policies that never skip
    skipped_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def teardown(self) -> None:
        """Undo global changes made by ``setup`` (e.g. TF32 switches); called after training."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None  # torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class ParallelStrategy(Component):
    """How the model and its data are spread over processes (single, DDP, FSDP2, hybrid).

    The training loop calls ``setup`` once, ``wrap`` the model before the optimizer is
    built, ``shard`` for each epoch's sample order, ``no_sync`` around every micro-batch of
    an accumulation window but the last, ``reduce`` on metrics to log, and ``teardown``.
    """

    kind = Kind.PARALLEL_STRATEGY
    #: the smallest number of processes this strategy runs on
    min_world_size: ClassVar[int] = 1

    def unsupported(self, dist: DistInfo) -> str | None:
        """Why this strategy cannot run with this world (a validation error), or None."""
        return None

    def setup(self, dist: DistInfo) -> None:
        """Join the process group when world_size > 1 (gloo on CPU, NCCL on GPU)."""
        self.dist = dist

    #: the device ``setup`` placed this rank on, or None to leave ``train.device`` in charge
    device: torch.device | None = None

    def wrap(self, model: torch.nn.Module, precision: PrecisionPolicy) -> torch.nn.Module:
        return model

    def shard(self, n_samples: int, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
        """Sample positions this rank trains on in ``epoch`` (same count on every rank)."""
        rng = np.random.default_rng(seed + epoch)
        return rng.permutation(n_samples) if shuffle else np.arange(n_samples)

    def no_sync(self, model: torch.nn.Module) -> AbstractContextManager:
        import contextlib
        return contextlib.nullcontext()

    def reduce(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Mean of each metric over ranks (identity on one process)."""
        return dict(metrics)

    def model_state(self, model: torch.nn.Module) -> dict[str, Any]:
        """A full, unsharded state dict for checkpoints and ``model/`` (collective)."""
        return (getattr(model, "module", model)).state_dict()

    def load_model_state(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        getattr(model, "module", model).load_state_dict(state)

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def grad_norm(self, parameters: list[torch.Tensor], max_norm: float | None = None) -> torch.Tensor:
        """The total gradient norm (clipped to ``max_norm`` first when given) as a plain tensor."""
        import torch

        if max_norm is not None:
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads or len({g.device for g in grads}) > 1:
            return torch.nn.utils.get_total_norm(grads)
        # one device: what get_total_norm computes, without its grouping (half its cost on small models)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def unwrap(self, model: torch.nn.Module, fresh: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """The trained module, unwrapped, with full weights (collective under sharding): the
        wrapped one's inner module here; sharding strategies load ``model_state`` into ``fresh()``."""
        return getattr(model, "module", model)

    def comm_share(self) -> float | None:
        """Share of step time spent in gradient communication since the last call, or None."""
        return None

    def teardown(self) -> None:
        pass


class Monitor(Component):
    """Receives every metrics record of a run (rank 0 only): steps, epochs, stage events."""

    kind = Kind.MONITOR

    def open(self, run: RunInfo) -> None:
        pass

    def log(self, record: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- around training

class Tuner(Component):
    """Searches pipeline values by ask/tell; each trial runs the training with ``--set`` values.

    Keys of what ``ask`` returns are dotted pipeline paths (``train.optimizer.lr``).
    """

    kind = Kind.TUNER

    @property
    def trials(self) -> int:
        raise NotImplementedError

    @property
    def metric(self) -> str:
        """Name of the validation metric to optimise (e.g. ``val_auc``)."""
        raise NotImplementedError

    @property
    def maximize(self) -> bool:
        return True

    def ask(self) -> dict[str, Any]:
        raise NotImplementedError

    def ask_batch(self, n: int) -> list[dict[str, Any]]:
        """``n`` points to try at once (``parallel: n``); tuners that can, make them differ."""
        return [self.ask() for _ in range(n)]

    def tell(self, values: Mapping[str, Any], score: float) -> None:
        raise NotImplementedError


@dataclass
class CompressContext:
    """What a compressor may use: data, training and evaluation of the current model.

    ``fit(model, epochs, loss=None)`` fine-tunes ``model`` with the run's training loop (its
    optimizer, parallel strategy and logging); ``loss(outputs, targets)``, when given,
    replaces the task loss. ``batches(n)`` yields ``n`` training ``(inputs, targets)`` pairs
    (e.g. for gradient-based importance)."""

    spec: DataSpec
    example_inputs: Any
    fit: Callable[..., Any]  # fit(model, epochs, loss=None) -> trained model (fine-tuning)
    evaluate: Callable[[Any], dict[str, float]]  # evaluate(model) -> validation metrics
    teacher: Any = None  # the model as trained, before any compression
    stage: StageContext = field(default_factory=StageContext)
    batches: Callable[[int], Any] = lambda n: iter(())


class Compressor(Component):
    """Makes a trained model smaller or faster (pruning, quantisation, distillation)."""

    kind = Kind.COMPRESSOR

    def compress(self, model: torch.nn.Module, ctx: CompressContext) -> torch.nn.Module:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        return {}


class Dataset(Component):
    """Loads (or generates) the table a pipeline starts from.

    For datasets, ``modalities`` are the feature modalities the dataset *produces* (empty:
    unknown until loaded); validation checks that every later stage accepts one of them.
    """

    kind = Kind.DATASET
    #: the target column when the pipeline names none
    default_target: ClassVar[str | None] = None

    def problems(self) -> list[tuple[str, str]]:
        """Validation-time checks of resources (files exist, columns readable):
        ``(field, message)`` pairs, empty when fine. Must be cheap and offline."""
        return []

    def columns(self) -> list[str] | None:
        """Column names, when knowable cheaply (lets validation check ``data.target``)."""
        return None

    def load(self, ctx: StageContext | None = None) -> Table:
        raise NotImplementedError


# --------------------------------------------------------------------------- run handles

@dataclass
class RunInfo:
    """Handle on a run, passed to lifecycle hooks and monitors (a handle, never the data)."""

    name: str
    dir: Path | None
    seed: int
    pipeline: Mapping[str, Any]  # the resolved pipeline, as a dict
    rank: int = 0
    world_size: int = 1
    #: adds a record to the run's metrics (metrics.jsonl and every monitor), e.g. system samples
    emit: Callable[[Mapping[str, Any]], None] = lambda record: None


@dataclass
class StageInfo:
    index: int
    section: str  # "data", "clean", "augment", "features", "train", "tune", "compress"
    name: str  # the component's name (or the section for data/train)
    component: Component | None = None


@dataclass
class StepInfo:
    """One optimizer step (or skipped step) of training."""

    step: int
    epoch: int
    loss: float
    stepped: bool
    metrics: Mapping[str, float] = field(default_factory=dict)

