"""One declaration per component kind, from which everything else about the kind is derived.

A :class:`KindSpec` names the kind, its registration hook, its base class, the pipeline
section it fills (a list or one component), whether it runs as a stage, and the conformance
checks every component of the kind must pass. The registry builds the hookspec and checks
registered classes from it, validation builds the ``Pipeline`` model and the ``Plan`` from
it, ``plugins list``/``schema``/``init`` and the conformance kit read it. Adding a kind is
one :func:`register_kind` call (like tox 4's ``ToxEnvRegister``)::

    register_kind(KindSpec("exporter", "forgeline_exporters", Exporter, section="export",
                           many=True, description="exporters, in order", checks=(check_export,)))

A new kind gets a top-level section placed after ``train:`` (or before it with
``before_train=True``). Nested sections (``data.source``, ``train.*``) belong to the ten
built-in kinds. Register kinds before plugins are loaded: a plugin module may do it at import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from .components import (Augmenter, Cleaner, Component, Compressor, Dataset, FeatureTransform, Kind,
                         Model, Monitor, ParallelStrategy, PrecisionPolicy, Tuner)

#: the conformance kit's module, where the built-in kinds' checks live (imported on demand)
_KIT = "forgeline.registry.conformance"


@dataclass(frozen=True)
class KindSpec:
    """Everything forgeline knows about one kind of component."""

    kind: str  # the kind's name: ``plugins list --kind``, ``Entry.kind`` (a ``Kind`` for built-ins)
    hook: str  # the registration hook plugins implement, returning classes of ``base``
    base: type[Component]  # every registered class must subclass it
    section: str  # where the pipeline file uses it: "clean", "tune", "train.model", "data.source"
    many: bool = False  # the section is a list of components (else one component, or none)
    description: str = ""  # the section's description (pipeline model, schema, init)
    default: str | None = None  # component used when the section is left out (``train.precision``: fp32)
    stage: bool = True  # a stage the runner runs in order (precision, parallel, monitors are not)
    before_train: bool = False  # a top-level section placed before ``train:`` in the pipeline file
    #: conformance checks (``check(component)``), callables or ``"module:function"`` names
    checks: tuple[Callable[[Any], None] | str, ...] = ()
    attr: str | None = None  # the ``Plan`` attribute (default: the section's last part)

    @property
    def plan_attr(self) -> str:
        return self.attr or self.section.rpartition(".")[2]

    @property
    def top_level(self) -> bool:
        return "." not in self.section

    def check_functions(self) -> list[Callable[[Any], None]]:
        """The conformance checks as callables (``"module:function"`` names imported now)."""
        out = []
        for check in self.checks:
            if isinstance(check, str):
                module, _, name = check.partition(":")
                check = getattr(importlib.import_module(module), name)
            out.append(check)
        return out


_TABLE: dict[str, KindSpec] = {}


def register_kind(spec: KindSpec) -> KindSpec:
    """Declare a kind; a name, hook, section or plan attribute already taken is refused, naming both."""
    for other in _TABLE.values():
        for what in ("kind", "hook", "section", "plan_attr"):
            if getattr(other, what) == getattr(spec, what):
                raise ValueError(f"kind {spec.kind!r}: {what} {getattr(spec, what)!r} is already "
                                 f"used by kind {other.kind!r}")
    if not spec.hook.startswith("forgeline_"):
        raise ValueError(f"kind {spec.kind!r}: hook {spec.hook!r} must start with 'forgeline_'")
    _TABLE[spec.kind] = spec
    return spec


def forget_kind(kind: str) -> None:
    """Remove a kind declared with :func:`register_kind` (tests); built-in kinds stay."""
    if kind in {k.value for k in Kind}:
        raise ValueError(f"{kind!r} is a built-in kind")
    _TABLE.pop(kind, None)


def kinds() -> tuple[KindSpec, ...]:
    """Every declared kind, built-ins first, in their order."""
    return tuple(_TABLE.values())


def spec_of(kind: str) -> KindSpec:
    try:
        return _TABLE[str(kind)]
    except KeyError:
        raise LookupError(f"unknown kind {kind!r}; known: {', '.join(_TABLE)}") from None


def as_kind(name: str) -> str:
    """``name`` as the catalog keys it: a :class:`Kind` member for built-ins, else the declared name."""
    spec = spec_of(name)
    return Kind(spec.kind) if spec.kind in Kind._value2member_map_ else spec.kind


def by_attr() -> dict[str, KindSpec]:
    return {s.plan_attr: s for s in _TABLE.values()}


def _kit(*names: str) -> tuple[str, ...]:
    return tuple(f"{_KIT}:{n}" for n in names)


# Table order is the order of ``plugins list``; pipeline order comes from the sections.
for _spec in (
    KindSpec(Kind.CLEANER, "forgeline_cleaners", Cleaner, "clean", many=True, before_train=True,
             description="cleaners, in order",
             checks=_kit("check_cleaner_fit_apply", "check_cleaner_fit_apply_once", "check_cleaner_no_mutation",
                         "check_cleaner_deterministic", "check_cleaner_fitted_pickles",
                         "check_cleaner_state_is_data", "check_cleaner_partitions")),
    KindSpec(Kind.AUGMENTER, "forgeline_augmenters", Augmenter, "augment", many=True, before_train=True,
             description="augmenters, in order (training split only)",
             checks=_kit("check_augmenter_augment", "check_augmenter_batch")),
    KindSpec(Kind.FEATURE_TRANSFORM, "forgeline_feature_transforms", FeatureTransform, "features", many=True,
             before_train=True, description="feature transforms, in order",
             checks=_kit("check_transform_fit_transform", "check_transform_sklearn", "check_transform_schema")),
    KindSpec(Kind.PARALLEL_STRATEGY, "forgeline_parallel_strategies", ParallelStrategy, "train.parallel",
             default="single", stage=False, checks=_kit("check_parallel_single_process")),
    KindSpec(Kind.PRECISION_POLICY, "forgeline_precision_policies", PrecisionPolicy, "train.precision",
             default="fp32", stage=False, checks=_kit("check_precision_step")),
    KindSpec(Kind.TUNER, "forgeline_tuners", Tuner, "tune",
             description="a tuner searching pipeline values (train runs inside it)",
             checks=_kit("check_tuner_ask_tell")),
    KindSpec(Kind.COMPRESSOR, "forgeline_compressors", Compressor, "compress", many=True,
             description="compressors applied to the trained model", checks=_kit("check_compressor_compress")),
    KindSpec(Kind.MODEL, "forgeline_models", Model, "train.model", checks=_kit("check_model_build")),
    KindSpec(Kind.DATASET, "forgeline_datasets", Dataset, "data.source", attr="dataset",
             checks=_kit("check_dataset_load")),
    KindSpec(Kind.MONITOR, "forgeline_monitors", Monitor, "monitor", many=True, stage=False,
             description="monitors besides jsonl and console", checks=_kit("check_monitor_log")),
):
    register_kind(_spec)
del _spec


def bases() -> dict[str, type[Component]]:
    """kind -> base class, derived from the table."""
    return {s.kind: s.base for s in _TABLE.values()}
