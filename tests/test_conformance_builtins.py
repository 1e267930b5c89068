"""The conformance kit over every built-in component, and the kit catching broken components."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from forgeline.core import (Augmenter, Cleaner, CleanResult, Compressor, FeatureTransform, Modality, Params,
                            StageContext, Tuner)
from forgeline.registry import build_catalog
from forgeline.registry.conformance import check_component, checks_for, make_table, parametrize_with_checks

#: built-ins checked with other than default parameters, and why
CONFIGURED = {
    # the kit's table has missing values on purpose; the default estimator asks for imputed data
    ("cleaner", "label-consistency"): {"estimator": "hist-gradient-boosting"},
    # a user's own factory is required: tests/factories.py plays the user's module
    ("model", "module"): {"factory": "factories:small_net", "kwargs": {"hidden": 4}},
    # tuners search a space the user writes: the learning rate, as in the kit's own example
    **{("tuner", name): {"space": {"train.optimizer.lr": {"real": [1e-4, 1e-1], "prior": "log-uniform"}}}
       for name in ("bayes", "random", "grid")},
}


def _builtins() -> list:
    """Every built-in as a class, or as an instance where defaults cannot apply to the kit's data."""
    components = []
    for entry in build_catalog():
        if entry.distribution != "forgeline":
            continue
        if (str(entry.kind), entry.name) in CONFIGURED:
            components.append(entry.cls(**CONFIGURED[str(entry.kind), entry.name]))
        elif entry.name == "credit-files" and entry.kind == "dataset":  # small, in a folder of its own
            folder = Path(tempfile.mkdtemp(prefix="forgeline-conformance-"))
            atexit.register(shutil.rmtree, folder, True)
            components.append(entry.cls(rows=600, files=2, folder=str(folder)))
        elif entry.name == "file" and entry.kind == "dataset":
            # written at collection time: parametrize needs the instance before fixtures exist
            folder = Path(tempfile.mkdtemp(prefix="forgeline-conformance-"))
            atexit.register(shutil.rmtree, folder, True)
            make_table(n_rows=30).frame.to_csv(folder / "table.csv")
            components.append(entry.cls(path=str(folder / "table.csv")))
        else:
            components.append(entry.cls)
    return components


BUILTINS = _builtins()


@parametrize_with_checks(BUILTINS)
def test_builtin_conforms(component, check):
    check(component)


# --------------------------------------------------------------- the kit itself

class DropNegativeParams(Params):
    column: str = Field("x1", description="column whose negative values are dropped")


class DropNegative(Cleaner):
    """Drop rows whose value in a column is negative (a well-behaved cleaner)."""

    name = "drop-negative"
    Params = DropNegativeParams

    def fit(self, table, ctx=None):
        return self

    def apply(self, table, ctx=None):
        bad = (table.frame[self.params.column] < 0).to_numpy()
        removed = table.frame[bad].copy()
        removed["reason"] = "negative"
        return CleanResult(table.take_mask(~bad), removed, flagged=removed.index.to_numpy())


class Mutating(DropNegative):
    """Clips in place: changes the caller's table."""

    name = "mutating"

    def apply(self, table, ctx=None):
        table.frame["x1"] = table.frame["x1"].clip(lower=0)
        return super().apply(table, ctx)


class NoReason(DropNegative):
    """Forgets to say why rows were removed."""

    name = "no-reason"

    def apply(self, table, ctx=None):
        result = super().apply(table, ctx)
        return CleanResult(result.table, result.removed.drop(columns="reason"))


class LosesRows(DropNegative):
    """Drops rows without reporting them."""

    name = "loses-rows"

    def apply(self, table, ctx=None):
        result = super().apply(table, ctx)
        return CleanResult(result.table.take(result.table.row_ids[1:]), result.removed)


class Random(DropNegative):
    """Ignores the seed."""

    name = "random"

    def apply(self, table, ctx=None):
        keep = np.random.default_rng().random(len(table)) < 0.5
        removed = table.frame[~keep].assign(reason="bad luck")
        return CleanResult(table.take_mask(keep), removed)


class UndocumentedParams(Params):
    k: int = 3


class Undocumented(DropNegative):
    """Has a parameter without a description."""

    name = "undocumented"
    Params = UndocumentedParams


class RenamingTransform(FeatureTransform):
    """Claims other feature names than it outputs."""

    name = "renaming"

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X[["x1"]] * 2

    def get_feature_names_out(self, input_features=None):
        return np.array(["x1_doubled"], dtype=object)


class ScaleParams(Params):
    with_mean: bool = Field(True, description="centre each numeric column on its mean")


class Scale(FeatureTransform):
    """Standardise the numeric columns (a well-behaved feature transform)."""

    name = "scale"
    Params = ScaleParams

    def fit(self, X, y=None):
        from sklearn.preprocessing import StandardScaler

        self.columns_ = list(X.select_dtypes("number").columns)
        self.scaler_ = StandardScaler(with_mean=self.params.with_mean).fit(X[self.columns_])
        return self

    def transform(self, X):
        import pandas as pd

        return pd.DataFrame(self.scaler_.transform(X[self.columns_]), index=X.index, columns=self.columns_)

    def get_feature_names_out(self, input_features=None):
        return np.array(self.columns_, dtype=object)


def test_a_good_feature_transform_passes_every_check():
    assert check_component(Scale(with_mean=False)) == []


def test_pytest_plugin_fixtures(forgeline_table, forgeline_stage_context, forgeline_catalog):
    assert len(forgeline_table) == 60 and forgeline_table.target == "label"
    assert forgeline_stage_context.seed == 0
    assert any(e.distribution == "forgeline" for e in forgeline_catalog)


def test_a_good_cleaner_passes_every_check():
    assert check_component(DropNegative) == []
    assert check_component(DropNegative(column="x2")) == []


@pytest.mark.parametrize("component, failing", [
    (Mutating, "check_cleaner_no_mutation"),
    (NoReason, "check_cleaner_fit_apply"),
    (LosesRows, "check_cleaner_fit_apply"),
    (Random, "check_cleaner_deterministic"),
    (Undocumented, "check_params_model"),
    (RenamingTransform, "check_transform_fit_transform"),
])
def test_the_kit_names_the_check_a_broken_component_fails(component, failing):
    with pytest.raises(AssertionError, match=f"{component.name}: {failing} failed"):
        check_component(component, expected_failed_checks={
            name: "not under test" for name, _ in checks_for(component)
            if name != failing and name in _failing(component)})


def _failing(component) -> set[str]:
    failed = set()
    for name, check in checks_for(component):
        try:
            check(component)
        except Exception:  # noqa: BLE001
            failed.add(name)
    return failed


def test_expected_failures_are_accepted_and_go_stale_loudly():
    check_component(Mutating, expected_failed_checks={"check_cleaner_no_mutation": "clips in place"})
    with pytest.raises(AssertionError, match="passed but is listed"):
        check_component(DropNegative, expected_failed_checks={"check_cleaner_deterministic": "stale"})


def test_parametrize_ids_and_xfail_marks():
    mark = parametrize_with_checks([DropNegative, Mutating],
                                   expected_failed_checks={"mutating": {"check_cleaner_no_mutation": "clips"}})
    params = mark.args[1]
    ids = [p.id for p in params]
    assert "drop-negative-check_name" in ids and "mutating-check_cleaner_no_mutation" in ids
    xfails = [p for p in params if p.marks]
    assert [p.id for p in xfails] == ["mutating-check_cleaner_no_mutation"]
    assert xfails[0].marks[0].kwargs["reason"] == "clips"


def test_generated_table_is_dirty_and_has_requested_arrays():
    table = make_table(n_rows=20, modalities=["image", "series"], first_id=100)
    assert table.row_ids.tolist() == list(range(100, 120))
    assert table.frame["x2"].isna().sum() == 2 and table.target == "label"
    assert table.frame.iloc[3].equals(table.frame.iloc[19])
    assert table.arrays["image"].shape == (20, 3, 8, 8) and table.arrays["series"].shape == (20, 2, 16)


class Jitter(Augmenter):
    """Copies of random rows with Gaussian noise on the numeric features; MixUp on batches."""

    name = "jitter"
    per_batch = True

    def augment(self, table, ctx=None):
        rng = (ctx or StageContext()).rng
        picked = table.take(rng.choice(table.row_ids, size=len(table) // 2))
        frame = picked.frame.copy()
        for column in picked.schema.features(Modality.NUMERIC):
            frame[column] = frame[column] + rng.normal(scale=0.1, size=len(frame))
        return picked.with_frame(frame)

    def augment_batch(self, batch, generator, spec):
        import torch

        x = batch["x"]
        order = torch.randperm(len(x), generator=generator)
        soft = torch.nn.functional.one_hot(batch["target"], spec.n_outputs).float()
        return {"x": 0.7 * x + 0.3 * x[order], "target": 0.7 * soft + 0.3 * soft[order]}


class RandomSearchParams(Params):
    trials: int = Field(4, ge=1, description="how many trials to run")
    metric: str = Field("val_auc", description="validation metric to maximise")


class RandomSearch(Tuner):
    """Draw the learning rate log-uniformly (a minimal tuner)."""

    name = "random-search"
    Params = RandomSearchParams

    @property
    def trials(self):
        return self.params.trials

    @property
    def metric(self):
        return self.params.metric

    def ask(self):
        self._rng = getattr(self, "_rng", np.random.default_rng(0))
        return {"train.optimizer.lr": float(10 ** self._rng.uniform(-5, -2))}

    def tell(self, values, score):
        self.history = [*getattr(self, "history", []), (values, score)]


class MagnitudePruneParams(Params):
    ratio: float = Field(0.5, gt=0, lt=1, description="share of the smallest weights set to zero")


class MagnitudePrune(Compressor):
    """Zero the smallest weights of every linear layer, then fine-tune one epoch."""

    name = "magnitude-prune"
    Params = MagnitudePruneParams

    def compress(self, model, ctx):
        import torch
        import torch.nn.utils.prune  # noqa: F401 - a submodule torch does not import by itself

        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.utils.prune.l1_unstructured(module, "weight", amount=self.params.ratio)
                torch.nn.utils.prune.remove(module, "weight")
        return ctx.fit(model, 1)


@pytest.mark.parametrize("component", [Jitter, RandomSearch, MagnitudePrune])
def test_the_kit_passes_well_behaved_components_of_other_kinds(component):
    assert check_component(component) == []
