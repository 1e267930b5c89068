"""The pipeline file's model: sections, their fields, defaults and descriptions.

This model checks the *structure* of a pipeline file (its component sections are derived
from the kind table, ``forgeline.core.kinds``); each component's own ``with:`` is
checked against that component's ``Params`` by validation (``forgeline.core.validation``),
which also turns every problem into a ``FILE:LINE: path: message`` line.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from .kinds import KindSpec, kinds

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Use(Section):
    """A component reference: ``use`` names it (``name`` or ``provider:name``), ``with`` sets it."""

    use: str = Field(description="registered component name, or provider:name")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with",
                                  description="the component's parameters")

    def dump(self) -> dict[str, Any]:
        return {"use": self.use, "with": dict(self.with_)}


class Split(Section):
    test: float = Field(0.2, gt=0, lt=1, description="share of rows held out for testing")
    validation: float = Field(0.0, ge=0, lt=1, description="share of rows held out for validation "
                              "(taken from what is left after the test split; 0 = use the test split)")
    stratify: bool = Field(True, description="keep class shares equal across splits (classification; "
                           "method random only)")
    method: Literal["random", "hash"] | None = Field(
        None, description="random: a seeded shuffle (scikit-learn's train_test_split); hash: each row by a "
        "hash of its row id and the seed, the same on every worker and engine (not stratified); "
        "default: random with engine pandas, hash with engine dask")


class ColumnOverride(Section):
    role: Literal["feature", "target", "id", "weight", "group", "time"] | None = Field(None, description="what the column is for")
    modality: Literal["numeric", "categorical", "text", "datetime", "image", "series", "volume"] | None = Field(
        None, description="what kind of values it holds")


MIN_WORKER_MEMORY = 512 * 2**20
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def byte_size(text: str) -> int | None:
    """'768MiB', '4 GB', '1e9' as bytes (None when it is not a size)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and _UNITS.get(m.group(2).lower())
    return int(float(m.group(1)) * unit) if unit else None


class DaskSettings(Section):
    address: str | None = Field(None, description="scheduler address of a running Dask cluster "
                                "(tcp://host:8786); null: start a local cluster for the run")
    workers: int = Field(2, ge=1, description="local cluster: worker processes")
    threads_per_worker: int = Field(1, ge=1, description="local cluster: threads per worker")
    memory_limit: str = Field("auto", description="local cluster: memory per worker ('512MiB', '4GB'; "
                              "auto: the machine's memory shared among the workers)")
    @field_validator("memory_limit")
    @classmethod
    def _enough_memory(cls, v: str) -> str:
        if v == "auto":
            return v
        size = byte_size(v)
        if size is None:
            raise ValueError(f"{v!r} is not a size; write it like '768MiB' or '4GB' (or auto)")
        if size < MIN_WORKER_MEMORY:
            raise ValueError(f"{v} is below 512MiB: a worker holding pandas, scikit-learn and dask takes about "
                             f"350 MiB before any data, and a worker past 90% of its limit pauses; give 512MiB "
                             f"or more (partitions are what must fit, not the table)")
        return v

    processes: bool = Field(True, description="local cluster: workers are processes (false: threads of "
                            "this process, faster to start, no memory limit enforced)")
    blocksize: str = Field("64MiB", description="CSV sources: bytes read per partition")
    partitions: int = Field(8, ge=1, description="in-memory sources (registered datasets): partitions "
                            "the loaded table is cut into")


class Data(Section):
    source: str = Field(description="a registered dataset, or a path to a .csv/.parquet file")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the dataset's parameters")
    target: str | None = Field(None, description="target column (defaults to the dataset's own)")
    split: Split = Field(default_factory=Split, description="held-out shares, fixed by the seed")
    columns: dict[str, ColumnOverride] = Field(default_factory=dict,
                                               description="role/modality overrides per column")
    engine: Literal["pandas", "dask"] = Field("pandas", description="where the data and clean stages run: "
                                              "pandas in this process, or dask in partitions on a cluster")
    dask: DaskSettings = Field(default_factory=DaskSettings, description="engine dask: the cluster and "
                               "how sources are partitioned")

    @property
    def split_method(self) -> str:
        """The split method in effect: the one given, else the engine's default."""
        return self.split.method or ("hash" if self.engine == "dask" else "random")


class Optimizer(Section):
    name: Literal["sgd", "adam", "adamw"] = Field("adamw", description="torch.optim optimizer")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0)
    fused: bool | None = Field(None, description="torch's fused optimizer kernel, one pass over each parameter: "
                               "on by default on CUDA and CPU (not for sharded parameters: fsdp, "
                               "tensor parallel); false for the per-tensor kernels")


class Scheduler(Section):
    name: Literal["none", "cosine", "step", "linear-warmup"] = Field(
        "none", description="learning-rate schedule over optimizer steps (it steps only after real steps)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps before the schedule")
    step_size: int = Field(1000, ge=1, description="step: optimizer steps between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="step: decay factor")


class Checkpoint(Section):
    every_steps: int | None = Field(None, ge=1, description="also checkpoint every N optimizer steps")
    keep: int = Field(2, ge=1, description="checkpoints kept on disk")


class Loader(Section):
    workers: int = Field(0, ge=0, description="data-loader worker processes building batches from the table "
                         "(0: batches are built in the training process)")
    max_tensor_mb: float = Field(1024, gt=0, description="largest split, once encoded, held in memory as "
                                 "tensors; a larger one streams batch by batch from the table")


class Train(Section):
    model: Use = Field(description="the model to train (a registered model, or package.module:callable)")
    epochs: int = Field(1, ge=1, description="passes over the training split")
    batch_size: int = Field(32, ge=1, description="micro-batch size per process")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step "
                            "(effective batch = accumulate x batch_size x processes)")
    optimizer: Optimizer = Field(default_factory=Optimizer, description="optimizer and its settings")
    scheduler: Scheduler = Field(default_factory=Scheduler, description="learning-rate schedule")
    precision: Use = Field(default_factory=lambda: Use(use="fp32"), description="precision policy")
    parallel: Use = Field(default_factory=lambda: Use(use="single"), description="parallel strategy")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    checkpoint: Checkpoint = Field(default_factory=Checkpoint, description="checkpoints: every epoch end, "
                                   "and every N steps when set")
    compile: bool = Field(False, description="torch.compile the model")
    loader: Loader = Field(default_factory=Loader, description="how batches are built: in memory or streamed")
    threads: int | None = Field(None, ge=1, description="CPU threads per process for torch's kernels "
                                "(default: the cores this process may use, shared among the processes "
                                "of this machine)")
    log_every: int = Field(10, ge=1, description="log step metrics every N optimizer steps")

    @field_validator("precision", "parallel", "model", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        # `precision: bf16` is accepted for `precision: {use: bf16}`
        return {"use": v} if isinstance(v, str) else v


class PipelineBase(Section):
    """A whole pipeline file."""

    name: str = Field(pattern=NAME_PATTERN, description="names the run folder")
    seed: int = Field(0, description="fixes splits, sampling and initialisation")
    data: Data = Field(description="where the rows come from, the target, the splits")

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, v: Any) -> Any:
        # `- robust-scale` is accepted for `- use: robust-scale`, `tune: grid` for `tune: {use: grid}`
        if not isinstance(v, dict):
            return v
        v = dict(v)
        for spec in kinds():
            item = v.get(spec.section)
            if spec.top_level and spec.many and isinstance(item, list):
                v[spec.section] = [{"use": i} if isinstance(i, str) else i for i in item]
            elif spec.top_level and isinstance(item, str):
                v[spec.section] = {"use": item}
        return v


_TRAIN = (Train | None, Field(None, description="the training loop"))


def _kind_field(spec: KindSpec) -> tuple[Any, Any]:
    if spec.many:
        return list[Use], Field(default_factory=list, description=spec.description)
    return Use | None, Field(None, description=spec.description)


@functools.cache
def _model(specs: tuple[KindSpec, ...]) -> type[PipelineBase]:
    top = [s for s in specs if s.top_level]
    fields = {s.section: _kind_field(s) for s in top if s.before_train}
    fields["train"] = _TRAIN
    fields.update({s.section: _kind_field(s) for s in top if not s.before_train})
    return create_model("Pipeline", __base__=PipelineBase, __module__=__name__, __doc__=PipelineBase.__doc__,
                        **fields)


def pipeline_model() -> type[PipelineBase]:
    """The pipeline file's model: fixed sections, plus one section per kind of the kind table
    (``forgeline.core.kinds``) in its place: lists before ``train:``, the rest after it."""
    return _model(kinds())


Pipeline = pipeline_model()  # the model for the built-in kinds (validation asks pipeline_model())
SECTIONS = tuple(Pipeline.model_fields)
