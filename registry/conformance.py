"""The conformance kit: checks every component must pass, like scikit-learn's ``check_estimator``.

Use it in a plugin's tests::

    from forgeline.registry.conformance import parametrize_with_checks

    @parametrize_with_checks([MyCleaner])
    def test_conformance(component, check):
        check(component)

or all at once with ``check_component(MyCleaner)``. A component may be given as a class (built
with its defaults) or as an instance (rebuilt with its parameters for every check). Checks run
on small generated data (:func:`make_table`); torch, pandas and scikit-learn are imported only
inside the checks.
"""

from __future__ import annotations

import copy
import functools
import pickle
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Union

import numpy as np
from pydantic import BaseModel, ValidationError

from ..core.components import (NAME_RE, Cleaner, CleanResult, CompressContext, Component, DataSpec, DistInfo,
                               PrecisionPolicy, RunInfo, StageContext)
from ..core.data import ARRAY_MODALITIES, Modality, Schema, Table
from ..core.kinds import spec_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

ComponentLike = Union[type[Component], Component]
Check = Callable[[ComponentLike], None]

_WORDS = ("fast red fox jumps over the lazy dog while quiet blue birds sing near green hills "
          "and small cats sleep under warm bright sun").split()


class CheckSkipped(Exception):
    """A check that does not apply here (e.g. a GPU-only precision policy on CPU)."""


# --------------------------------------------------------------------------- data

def make_table(n_rows: int = 60, seed: int = 0, modalities: Iterable[Modality | str] = (),
               first_id: int = 0) -> Table:
    """A small, slightly dirty table: numeric, categorical and text features, a binary target.

    Two numeric values are missing, one row is an exact duplicate of another and one value is
    an outlier, so that cleaners have something to do. Image (n x 3 x 8 x 8), series
    (n x 2 x 16) and volume (n x 1 x 4 x 4 x 4) arrays are added when ``modalities`` asks.
    Row ids start at ``first_id``.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = np.arange(n_rows) % 2
    rng.shuffle(y)
    x1 = rng.normal(size=n_rows) + 1.5 * y
    x2 = rng.normal(loc=10.0, scale=2.0, size=n_rows)
    x2[0] = 80.0  # an outlier
    x2[[1, 2]] = np.nan  # missing values
    colour = rng.choice(["red", "green", "blue"], size=n_rows)
    text = [" ".join(rng.choice(_WORDS, size=6)) for _ in range(n_rows)]
    frame = pd.DataFrame({"x1": x1, "x2": x2, "colour": pd.Categorical(colour), "comment": text, "label": y})
    frame.iloc[n_rows - 1] = frame.iloc[3]  # an exact duplicate row
    frame["label"] = frame["label"].astype(np.int64)
    shapes = {Modality.IMAGE: (3, 8, 8), Modality.SERIES: (2, 16), Modality.VOLUME: (1, 4, 4, 4)}
    wanted = {Modality(m) for m in modalities} & ARRAY_MODALITIES
    arrays = {str(m): rng.random((n_rows, *shapes[m]), dtype=np.float32) for m in sorted(wanted)}
    overrides = {"comment": {"modality": "text"}, "colour": {"modality": "categorical"},
                 **{name: {"modality": name} for name in arrays}}
    return Table.from_frame(frame, target="label", arrays=arrays, overrides=overrides, first_id=first_id)


def _table_for(cls: type[Component], first_id: int = 0, seed: int = 0) -> Table:
    return make_table(seed=seed, modalities=cls.modalities, first_id=first_id)


def _features_for(cls: type[Component], table: Table) -> pd.DataFrame:
    """The table's frame features the component accepts (all of them when it declares none)."""
    mods = cls.modalities or None
    cols = [c for c in table.schema.features(mods) if c in table.frame.columns]
    return table.frame[cols]


def _build(component: ComponentLike) -> Component:
    """A fresh instance: defaults for a class, the same parameters for an instance."""
    if isinstance(component, type):
        required = [n for n, f in component.Params.model_fields.items() if f.is_required()]
        if required:
            raise CheckSkipped(f"{component.__qualname__} has required parameters ({', '.join(required)}): "
                               f"give the kit an instance, e.g. {component.__qualname__}({required[0]}=...)")
        return component()
    return type(component)(component.params.model_copy(deep=True))


def _cls(component: ComponentLike) -> type[Component]:
    return component if isinstance(component, type) else type(component)


def _same(a: Any, b: Any) -> bool:
    """Deep equality for nested dicts/lists of numbers, arrays and tensors."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    if hasattr(b, "detach"):
        b = b.detach().cpu().numpy()
    if isinstance(a, (np.ndarray, float, np.floating)) or isinstance(b, (np.ndarray, float, np.floating)):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return a == b


# --------------------------------------------------------------------------- general checks

def check_name(component: ComponentLike) -> None:
    name = getattr(_cls(component), "name", None)
    assert isinstance(name, str) and NAME_RE.match(name), f"name {name!r} is not kebab-case"


def check_summary(component: ComponentLike) -> None:
    cls = _cls(component)
    assert cls.summary(), f"{cls.__qualname__} needs a docstring whose first line is its summary"


def check_params_model(component: ComponentLike) -> None:
    params = _cls(component).Params
    assert isinstance(params, type) and issubclass(params, BaseModel), "Params must be a pydantic model"
    assert params.model_config.get("extra") == "forbid", "Params must forbid unknown keys (extra='forbid')"
    try:
        params.model_validate({"no_such_parameter_": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError("Params accepted an unknown key")
    undocumented = [n for n, f in params.model_fields.items() if not (f.description or "").strip()]
    assert not undocumented, f"Params fields without a description: {', '.join(undocumented)}"


def check_default_construct(component: ComponentLike) -> None:
    instance = _build(component)
    assert isinstance(instance, spec_of(_cls(component).kind).base)


def check_repr(component: ComponentLike) -> None:
    text = repr(_build(component))
    assert isinstance(text, str) and text, "repr() must return a non-empty string"


def check_pickle(component: ComponentLike) -> None:
    instance = _build(component)
    again = pickle.loads(pickle.dumps(instance))
    assert type(again) is type(instance) and again.get_params() == instance.get_params()


def check_get_set_params(component: ComponentLike) -> None:
    instance = _build(component)
    params = instance.get_params()
    assert isinstance(params, dict)
    assert instance.set_params(**params) is instance, "set_params must return the instance"
    assert instance.get_params() == params, "get_params/set_params do not round-trip"
    rebuilt = type(instance)(**params)
    assert rebuilt.get_params() == params, "cls(**get_params()) does not rebuild the same parameters"


GENERAL_CHECKS: list[Check] = [check_name, check_summary, check_params_model, check_default_construct,
                               check_repr, check_pickle, check_get_set_params]


# --------------------------------------------------------------------------- cleaners

def _clean(component: ComponentLike, seed: int = 0) -> tuple[Component, Table, Table, CleanResult]:
    cls = _cls(component)
    train, other = _table_for(cls, seed=seed), _table_for(cls, first_id=1000, seed=seed + 1)
    cleaner = _build(component)
    fitted = cleaner.fit(train, StageContext(seed=seed))
    assert fitted is cleaner, "fit must return the cleaner itself"
    return cleaner, train, other, cleaner.apply(other, StageContext(seed=seed))


def _check_result(result: Any, table: Table) -> None:
    """A cleaner's result for ``table``: the right types, the row accounting, the target kept."""
    assert isinstance(result, CleanResult), f"returned {type(result).__name__}, not CleanResult"
    assert isinstance(result.table, Table), "CleanResult.table must be a Table"
    problem = result.accounting_problem(table)
    assert problem is None, f"the row accounting does not hold: {problem}"
    assert set(np.asarray(result.flagged).tolist()) <= set(table.row_ids), "flagged holds unknown row ids"
    assert result.table.target == table.target, "the target column changed"
    assert isinstance(result.report, dict), "CleanResult.report must be a dict"


def check_cleaner_fit_apply(component: ComponentLike) -> None:
    """``fit`` on one table, then ``apply`` to another."""
    _, _, table, result = _clean(component)
    _check_result(result, table)


def check_cleaner_fit_apply_once(component: ComponentLike) -> None:
    """``fit_apply`` (what the runner calls on the training split) against ``fit`` then ``apply``.

    A cleaner that does not override ``fit_apply`` must give exactly ``fit(t).apply(t)``. One
    that overrides it (to reuse what fitting computed) may clean the training split its own
    way (``dedup`` does not call every training row a copy of itself), but it must fit the
    same state: both fitted cleaners must clean other data identically.
    """
    cls = _cls(component)
    train, other = _table_for(cls), _table_for(cls, first_id=1000, seed=1)
    once = _build(component)
    result = once.fit_apply(train, StageContext(seed=0))
    _check_result(result, train)
    twice = _build(component).fit(train, StageContext(seed=0))
    if type(once).fit_apply is Cleaner.fit_apply:
        a, b = _outcome(result), _outcome(twice.apply(train, StageContext(seed=0)))
        assert a[0].equals(b[0]) and a[1:] == b[1:], "fit_apply differs from fit then apply"
    a, b = _outcome(once.apply(other, StageContext(seed=0))), _outcome(twice.apply(other, StageContext(seed=0)))
    assert a[0].equals(b[0]) and a[1:] == b[1:], "fit_apply fitted another state than fit: other data is cleaned differently"


def check_cleaner_no_mutation(component: ComponentLike) -> None:
    cls = _cls(component)
    train, other = _table_for(cls), _table_for(cls, first_id=1000, seed=1)
    before = [(t.frame.copy(deep=True), {k: v.copy() for k, v in t.arrays.items()}) for t in (train, other)]
    cleaner = _build(component)
    cleaner.fit(train, StageContext())
    cleaner.apply(other, StageContext())
    for (frame, arrays), table in zip(before, (train, other)):
        assert frame.equals(table.frame) and list(frame.columns) == list(table.frame.columns), \
            "the input table's frame was modified in place"
        assert all(np.array_equal(v, table.arrays[k]) for k, v in arrays.items()), "input arrays were modified"


def _outcome(result: CleanResult) -> tuple:
    return (result.table.frame, sorted(result.removed.index), sorted(result.removed["reason"].astype(str)))


def check_cleaner_partitions(component: ComponentLike) -> None:
    """Engine dask: a cleaner that runs on partitions (``partitions_refusal()`` is None) cleans a
    table cut into 3 partitions as pandas cleans it whole: the same kept and removed row ids,
    values equal to 1e-9, the accounting holding in every partition. A cleaner that refuses has
    nothing to check here; skipped when dask is not installed."""
    import pandas as pd

    cleaner = _build(component)
    if cleaner.partitions_refusal() is not None:
        return
    try:
        import dask
        import dask.dataframe as dd
    except ImportError:
        raise CheckSkipped("dask is not installed (pip install 'forgeline[dask]')") from None
    from ..core.partitioned import Partitioned, same_dtypes_as_pandas
    from ..core.stages.partitions import partition_plan

    cls, ctx = _cls(component), StageContext(seed=0)
    train, other = _table_for(cls), _table_for(cls, first_id=1000, seed=1)
    reference = _build(component)
    expected = {"train": reference.fit_apply(train, ctx), "other": reference.apply(other, ctx)}
    same_dtypes_as_pandas()
    with dask.config.set(scheduler="sync"):
        for name, table in (("train", train), ("other", other)):
            parts = Partitioned(dd.from_pandas(table.frame, npartitions=3, sort=True), table.schema)
            plan = partition_plan(cleaner, parts, fit=name == "train")
            outs = parts.reduce(lambda part: (part, plan.apply(part)))
            for part, out in outs:
                _check_result(out, part)
            kept = pd.concat([out.table.frame for _, out in outs])
            removed = sorted(i for _, out in outs for i in out.removed.index)
            want = expected[name]
            assert kept.index.equals(want.table.frame.index), f"{name}: other rows kept than on pandas"
            assert removed == sorted(want.removed.index), f"{name}: other rows removed than on pandas"
            pd.testing.assert_frame_equal(kept, want.table.frame, check_exact=False, rtol=1e-9,
                                          obj=f"{name}: rows cleaned on partitions")


def check_cleaner_deterministic(component: ComponentLike) -> None:
    a, b = _outcome(_clean(component)[3]), _outcome(_clean(component)[3])
    assert a[0].equals(b[0]) and a[1:] == b[1:], "same seed, same data gave different results"


def check_cleaner_fitted_pickles(component: ComponentLike) -> None:
    cleaner, _, other, result = _clean(component)
    again = pickle.loads(pickle.dumps(cleaner))
    a, b = _outcome(result), _outcome(again.apply(other, StageContext()))
    assert a[0].equals(b[0]) and a[1:] == b[1:], "a pickled fitted cleaner cleans differently"


def check_cleaner_state_is_data(component: ComponentLike) -> None:
    """Fitted state saves as data (``forgeline.core.state``) and the reloaded cleaner cleans the same:
    what ``forgeline apply`` does with a run folder, which it never unpickles."""

    from ..core.catalog import Catalog, Entry
    from ..core.runfolder import write_atomic
    from ..core.state import STATE_FILE, load_component, save_component

    cleaner, _, other, result = _clean(component)
    cls = _cls(component)
    catalog = Catalog([Entry(cls.kind, cls.name, cls, "conformance-kit", "0", "kit")])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_component(root / "stage", cleaner, "conformance-kit", write_atomic)
        again = load_component(root / "stage" / STATE_FILE, catalog, root)
    a, b = _outcome(result), _outcome(again.apply(other, StageContext()))
    assert a[0].equals(b[0]) and a[1:] == b[1:], "a cleaner reloaded from its saved state cleans differently"


# --------------------------------------------------------------------------- augmenters

def check_augmenter_augment(component: ComponentLike) -> None:
    cls = _cls(component)
    if not cls.per_sample:
        raise CheckSkipped("augmenter works per batch only (per_sample = False)")
    table = _table_for(cls)
    out = _build(component).augment(table, StageContext(seed=0))
    assert isinstance(out, Table), f"augment returned {type(out).__name__}, not a Table"
    assert list(out.frame.columns) == list(table.frame.columns), "augmented rows must have the input's columns"
    assert set(out.frame.index) <= set(table.row_ids), "the index of new rows must hold source row ids"
    assert set(out.arrays) == set(table.arrays), "augmented rows must have the input's arrays"
    again = _build(component).augment(table, StageContext(seed=0))
    assert out.frame.equals(again.frame), "same seed gave different augmented rows"


def check_augmenter_batch(component: ComponentLike) -> None:
    import torch

    cls = _cls(component)
    if not cls.per_batch:
        raise CheckSkipped("augmenter works per sample only (per_batch = False)")
    generator = torch.Generator().manual_seed(0)
    shapes = {Modality.VOLUME: (1, 4, 4, 4), Modality.SERIES: (2, 16)}
    shape = next((shapes[m] for m in shapes if m in cls.modalities),
                 (3, 8, 8) if Modality.IMAGE in cls.modalities or not cls.modalities else (5,))
    spec = DataSpec(task="classification", n_outputs=2, input_shape=shape, input_shapes={"x": shape})
    batch = {"x": torch.rand(8, *shape, generator=generator), "target": torch.arange(8) % 2}
    out = _build(component).augment_batch(dict(batch), generator, spec)
    assert isinstance(out, Mapping) and "target" in out, \
        "augment_batch must return the batch: a mapping of named tensors with 'target'"
    assert tuple(out["x"].shape) == tuple(batch["x"].shape), "augment_batch must keep the inputs' shape"
    target = out["target"]
    assert target.shape[0] == 8, "augment_batch must return one target per sample"
    if target.is_floating_point() and target.ndim == 2:  # soft targets: class weights summing to one
        assert target.shape[1] == spec.n_outputs, "soft targets must have one column per class (spec.n_outputs)"
        assert torch.allclose(target.sum(1), torch.ones(8)), "soft targets must sum to one per sample"


# --------------------------------------------------------------------------- feature transforms

def _xy(component: ComponentLike) -> tuple[pd.DataFrame, pd.Series]:
    cls = _cls(component)
    table = _table_for(cls)
    return _features_for(cls, table), table.y


def check_transform_fit_transform(component: ComponentLike) -> None:
    X, y = _xy(component)
    transform = _build(component)
    assert transform.fit(X, y) is transform, "fit must return the transform itself"
    out = transform.transform(X)
    assert out.index.equals(X.index), "transform must keep the index (row ids)"
    names = list(transform.get_feature_names_out())
    assert names == [str(c) for c in out.columns], (
        f"get_feature_names_out() {names[:5]} does not match the output columns {list(out.columns)[:5]}")


def check_transform_schema(component: ComponentLike) -> None:
    """``fit`` takes the schema; ``output_schema`` names every output column as a feature."""
    X, y = _xy(component)
    schema = Schema(tuple(c for c in _table_for(_cls(component)).schema.columns if c.name in X.columns))
    transform = _build(component)
    out = transform.fit_with_schema(X, y, schema).transform(X)
    specs = transform.output_schema()
    assert isinstance(specs, Schema), f"output_schema returned {type(specs).__name__}, not a Schema"
    assert specs.names() == [str(c) for c in out.columns], (
        f"output_schema() names {specs.names()[:5]}, the output has {list(out.columns)[:5]}")
    assert all(c.role.value == "feature" for c in specs.columns), "every output column must be a feature"


def check_transform_sklearn(component: ComponentLike) -> None:
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    X, y = _xy(component)
    transform = _build(component)
    cloned = clone(transform)
    assert cloned is not transform and cloned.get_params() == transform.get_params(), "sklearn clone failed"
    direct = clone(transform).fit(X, y).transform(X)
    piped = Pipeline([("transform", cloned)]).fit(X, y).transform(X)
    assert list(piped.columns) == list(direct.columns) and piped.index.equals(direct.index), \
        "inside an sklearn Pipeline the transform gives other columns or rows"


# --------------------------------------------------------------------------- datasets

def check_dataset_load(component: ComponentLike) -> None:
    dataset = _build(component)
    problems = dataset.problems()
    assert isinstance(problems, list), "problems() must return a list of (field, message)"
    if problems:
        raise CheckSkipped(f"dataset reports problems with its resources: {problems[:2]}")
    table = dataset.load(StageContext(seed=0))
    assert isinstance(table, Table) and len(table) >= 1, "load must return a Table with at least one row"
    assert table.frame.index.is_unique, "row ids must be unique"
    target = type(dataset).default_target
    if target is not None:
        assert target in table.frame.columns, f"default_target {target!r} is not a column of the loaded table"
    again = _build(component).load(StageContext(seed=0))
    assert table.fingerprint() == again.fingerprint(), "two loads with the same seed differ"


# --------------------------------------------------------------------------- models

def check_model_build(component: ComponentLike) -> None:
    import torch

    cls = _cls(component)
    table = _table_for(cls)
    for task, n_outputs in (("classification", 2), ("regression", 1)):
        model = _build(component)
        model.fit_inputs(table)
        x = model.inputs(table)
        assert len(x) == len(table), "inputs must give one row per table row"
        modality = next((m for m in (Modality.IMAGE, Modality.SERIES, Modality.VOLUME, Modality.TEXT)
                         if m in cls.modalities), Modality.NUMERIC)
        spec = DataSpec(task, n_outputs, tuple(x.shape[1:]), tuple(table.schema.features()), modality)
        module = model.build(spec)
        assert isinstance(module, torch.nn.Module), "build must return a torch.nn.Module"
        module.eval()
        with torch.no_grad():
            out = module(x)
        assert tuple(out.shape) == (len(table), n_outputs), (
            f"{task}: output shape {tuple(out.shape)}, expected {(len(table), n_outputs)}")


# --------------------------------------------------------------------------- training pieces

def _tiny_problem(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    import torch

    torch.manual_seed(seed)
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return model, x, y


def check_precision_step(component: ComponentLike) -> None:
    import torch

    cpu = torch.device("cpu")
    policy = _build(component)
    why = policy.unsupported(cpu)
    if why:
        raise CheckSkipped(f"unsupported on CPU: {why}")
    policy.setup(cpu)
    try:
        _precision_steps(component, policy, cpu)
    finally:
        policy.teardown()


def _precision_steps(component: ComponentLike, policy: PrecisionPolicy, cpu: torch.device) -> None:
    import torch

    model, x, y = _tiny_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        optimizer.zero_grad()
        with policy.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        policy.backward(loss)
        policy.unscale(optimizer)
        stepped = policy.step(optimizer)
        assert isinstance(stepped, bool), f"step must return a bool, got {type(stepped).__name__}"
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed or not stepped, "step returned True but no parameter changed"
    metrics = policy.metrics()
    assert isinstance(metrics, dict) and all(isinstance(v, (int, float)) for v in metrics.values()), \
        "metrics must be a dict of numbers"
    state = policy.state_dict()
    restored = _build(component)
    restored.setup(cpu)
    try:
        restored.load_state_dict(copy.deepcopy(state))
        assert _same(restored.state_dict(), state), "state_dict does not round-trip through load_state_dict"
    finally:
        restored.teardown()


def check_parallel_single_process(component: ComponentLike) -> None:
    import torch

    strategy = _build(component)
    dist = DistInfo(device=torch.device("cpu"))
    why = strategy.unsupported(dist)
    if why or type(strategy).min_world_size > 1:
        raise CheckSkipped(f"needs more than one process: {why or type(strategy).min_world_size}")
    strategy.setup(dist)
    try:
        precision = PrecisionPolicy()
        precision.setup(dist.device)
        model, x, y = _tiny_problem()
        wrapped = strategy.wrap(model, precision)
        assert isinstance(wrapped, torch.nn.Module), "wrap must return a torch.nn.Module"
        positions = np.asarray(strategy.shard(10, epoch=0, seed=0))
        assert positions.dtype.kind in "iu", "shard must return integer positions"
        assert ((positions >= 0) & (positions < 10)).all(), "shard returned positions out of range"
        assert set(positions.tolist()) == set(range(10)), "in a world of one, shard must cover every sample"
        with strategy.no_sync(wrapped):
            torch.nn.functional.cross_entropy(wrapped(x), y).backward()
        reduced = strategy.reduce({"loss": 1.5})
        assert reduced == {"loss": 1.5}, f"reduce in a world of one changed the metrics: {reduced}"
        state = strategy.model_state(wrapped)
        assert set(state) == set(model.state_dict()), "model_state keys differ from the model's state_dict"
        strategy.load_model_state(wrapped, state)
    finally:
        strategy.teardown()


def check_monitor_log(component: ComponentLike) -> None:
    monitor = _build(component)
    with tempfile.TemporaryDirectory() as tmp:
        monitor.open(RunInfo(name="conformance", dir=Path(tmp), seed=0, pipeline={"name": "conformance"}))
        monitor.log({"event": "step", "step": 1, "epoch": 0, "loss": 0.5})
        monitor.log({"event": "epoch", "epoch": 0, "train_loss": 0.5, "val_auc": 0.7})
        monitor.close()


def check_tuner_ask_tell(component: ComponentLike) -> None:
    tuner = _build(component)
    assert isinstance(tuner.trials, int) and tuner.trials >= 1, "trials must be a positive int"
    assert isinstance(tuner.metric, str) and tuner.metric, "metric must name a validation metric"
    for score in (0.5, 0.6):
        values = tuner.ask()
        assert isinstance(values, dict), f"ask must return a dict, got {type(values).__name__}"
        tuner.tell(values, score)


def check_compressor_compress(component: ComponentLike) -> None:
    import torch

    model, x, y = _tiny_problem()

    def fit(m: torch.nn.Module, epochs: int, loss: Callable | None = None) -> torch.nn.Module:
        loss = loss or torch.nn.functional.cross_entropy  # a compressor may train with its own loss
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
        m.train()
        for _ in range(max(1, epochs)):
            optimizer.zero_grad()
            loss(m(x), y).backward()
            optimizer.step()
        return m

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            out = m(x)
        return {"val_loss": float(torch.nn.functional.cross_entropy(out, y)),
                "val_accuracy": float((out.argmax(1) == y).float().mean())}

    fit(model, 5)
    ctx = CompressContext(DataSpec("classification", 2, (4,)), x, fit, evaluate, teacher=copy.deepcopy(model))
    out = _build(component).compress(model, ctx)
    assert isinstance(out, torch.nn.Module), "compress must return a torch.nn.Module"
    out.eval()
    with torch.no_grad():
        pred = out(x)
    assert tuple(pred.shape) == (32, 2), f"the compressed model's output shape is {tuple(pred.shape)}"


# --------------------------------------------------------------------------- public API

def checks_for(component: ComponentLike) -> list[tuple[str, Check]]:
    """Every check that applies to ``component``: ``(check_name, check)`` pairs, general ones first."""
    kind = getattr(_cls(component), "kind", None)
    try:
        own = spec_of(kind).check_functions() if kind is not None else []
    except LookupError:  # a kind nobody declared: only the general checks apply
        own = []
    checks = GENERAL_CHECKS + own
    return [(c.__name__, c) for c in checks]


def _component_id(component: ComponentLike) -> str:
    cls = _cls(component)
    return getattr(cls, "name", None) or cls.__qualname__


def check_component(component: ComponentLike, expected_failed_checks: Mapping[str, str] | None = None) -> list[str]:
    """Run every check; raise AssertionError naming the first failing one.

    Checks in ``expected_failed_checks`` (name -> reason) may fail; one of them passing is
    reported too, so the list does not go stale. Returns the names of skipped checks.
    """
    expected = dict(expected_failed_checks or {})
    skipped = []
    for name, check in checks_for(component):
        try:
            check(component)
        except CheckSkipped:
            skipped.append(name)
        except Exception as e:  # noqa: BLE001 - any failure of a check is the component's failure
            if name not in expected:
                raise AssertionError(f"{_component_id(component)}: {name} failed: {type(e).__name__}: {e}") from e
        else:
            if name in expected:
                raise AssertionError(f"{_component_id(component)}: {name} passed but is listed in "
                                     f"expected_failed_checks ({expected[name]}); remove it")
    return skipped


def _run_in_pytest(check: Check) -> Check:
    @functools.wraps(check)
    def run(component: ComponentLike) -> None:
        import pytest

        try:
            check(component)
        except CheckSkipped as e:
            pytest.skip(str(e))
    return run


def parametrize_with_checks(components: Iterable[ComponentLike],
                            expected_failed_checks: Mapping[str, Mapping[str, str]] | Callable[[ComponentLike], Mapping[str, str]] | None = None):
    """A ``pytest.mark.parametrize("component, check", ...)`` over every component and check.

    Ids read ``<name>-<check>``. ``expected_failed_checks`` maps a component name to
    ``{check_name: reason}`` (or is a callable taking the component), and those become
    strict xfails carrying the reason.
    """
    import pytest

    def expected_for(component: ComponentLike) -> Mapping[str, str]:
        if callable(expected_failed_checks):
            return expected_failed_checks(component) or {}
        return (expected_failed_checks or {}).get(_component_id(component), {})

    params = []
    for component in components:
        expected = expected_for(component)
        for name, check in checks_for(component):
            marks = [pytest.mark.xfail(reason=expected[name], strict=True)] if name in expected else []
            params.append(pytest.param(component, _run_in_pytest(check),
                                       id=f"{_component_id(component)}-{name}", marks=marks))
    return pytest.mark.parametrize("component, check", params)
