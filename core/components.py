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

from .data import Modality, Table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

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
        return _HOOKS[self]

    @property
    def section(self) -> str:
        return _SECTIONS[self]


_HOOKS = {
    Kind.CLEANER: "forgeline_cleaners",
    Kind.AUGMENTER: "forgeline_augmenters",
    Kind.FEATURE_TRANSFORM: "forgeline_feature_transforms",
    Kind.PARALLEL_STRATEGY: "forgeline_parallel_strategies",
    Kind.PRECISION_POLICY: "forgeline_precision_policies",
    Kind.TUNER: "forgeline_tuners",
    Kind.COMPRESSOR: "forgeline_compressors",
    Kind.MODEL: "forgeline_models",
    Kind.DATASET: "forgeline_datasets",
    Kind.MONITOR: "forgeline_monitors",
}
_SECTIONS = {
    Kind.CLEANER: "clean",
    Kind.AUGMENTER: "augment",
    Kind.FEATURE_TRANSFORM: "features",
    Kind.PARALLEL_STRATEGY: "train.parallel",
    Kind.PRECISION_POLICY: "train.precision",
    Kind.TUNER: "tune",
    Kind.COMPRESSOR: "compress",
    Kind.MODEL: "train.model",
    Kind.DATASET: "data.source",
    Kind.MONITOR: "monitor",
}


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


class Augmenter(Component):
    """Adds synthetic training rows (per sample) and/or mixes batches inside the training loop.

    ``augment`` returns *new* rows only; their frame index holds the row id each new row was
    made from (repeats allowed). The runner gives them fresh row ids and records provenance.
    Augmenters only ever see the training split.
    """

    kind = Kind.AUGMENTER
    per_sample: ClassVar[bool] = True
    per_batch: ClassVar[bool] = False

    def augment(self, table: Table, ctx: StageContext | None = None) -> Table:
        raise NotImplementedError

    def augment_batch(self, inputs: Any, targets: torch.Tensor, generator: torch.Generator) -> tuple[Any, torch.Tensor]:
        """Mix a training batch (CutMix/MixUp); targets may become soft (N x classes)."""
        return inputs, targets


class FeatureTransform(Component):
    """A scikit-learn transformer over the table's feature columns (``fit``/``transform``/
    ``get_feature_names_out``), so it also drops into an sklearn ``Pipeline``."""

    kind = Kind.FEATURE_TRANSFORM

    def fit(self, X: pd.DataFrame, y: pd.Series | None = None) -> FeatureTransform:
        raise NotImplementedError

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """New feature frame with the same index (row ids)."""
        raise NotImplementedError

    def fit_transform(self, X: pd.DataFrame, y: pd.Series | None = None) -> pd.DataFrame:
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        raise NotImplementedError

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
    input_shape: tuple[int, ...]  # one sample's input shape as produced by ``Model.inputs``
    feature_names: tuple[str, ...] = ()
    modality: Modality = Modality.NUMERIC
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. vocabulary size


class Model(Component):
    """Turns tables into tensors and builds the ``torch.nn.Module`` that learns from them."""

    kind = Kind.MODEL

    def fit_inputs(self, table: Table) -> None:
        """Learn input encodings (category levels, vocabulary) on the training split."""

    def inputs(self, table: Table) -> torch.Tensor:
        """The model inputs for a table, one row per table row."""
        raise NotImplementedError

    def build(self, spec: DataSpec) -> torch.nn.Module:
        raise NotImplementedError


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

    def tell(self, values: Mapping[str, Any], score: float) -> None:
        raise NotImplementedError


@dataclass
class CompressContext:
    """What a compressor may use: data, training and evaluation of the current model."""

    spec: DataSpec
    example_inputs: Any
    fit: Callable[[Any, int], Any]  # fit(model, epochs) -> trained model (fine-tuning)
    evaluate: Callable[[Any], dict[str, float]]  # evaluate(model) -> validation metrics
    teacher: Any = None  # the model as trained, before any compression
    stage: StageContext = field(default_factory=StageContext)


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


BASES: dict[Kind, type[Component]] = {
    Kind.CLEANER: Cleaner,
    Kind.AUGMENTER: Augmenter,
    Kind.FEATURE_TRANSFORM: FeatureTransform,
    Kind.PARALLEL_STRATEGY: ParallelStrategy,
    Kind.PRECISION_POLICY: PrecisionPolicy,
    Kind.TUNER: Tuner,
    Kind.COMPRESSOR: Compressor,
    Kind.MODEL: Model,
    Kind.DATASET: Dataset,
    Kind.MONITOR: Monitor,
}
