"""The reshaped core: stages and their hooks, the kind table, the contracts components see."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forgeline.core import (Cleaner, CleanResult, ColumnSpec, FeatureTransform, InputError, Kind, Modality,
                            Role, Schema, StageContext, StageError, hookimpl)
from forgeline.core import api
from forgeline.core.catalog import Entry
from forgeline.core.kinds import forget_kind
from forgeline.registry import build_catalog
from forgeline.registry.conformance import check_component, checks_for, make_table
from forgeline.registry.discovery import make_plugin_manager

from conftest import pip_install_target, write_distribution


def _data_file(folder: Path, n: int = 160) -> Path:
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], n)
    x1 = rng.normal(size=n)
    y = ((x1 + (colour == "red")) > 0.5).astype(int)
    path = folder / "rows.csv"
    pd.DataFrame({"x1": x1, "x2": rng.normal(size=n), "colour": colour, "label": y}).to_csv(path, index=False)
    return path


def _pipeline(data: Path, **sections) -> dict:
    return {"name": "core-stages", "seed": 0,
            "data": {"source": str(data), "target": "label", "columns": {"colour": {"modality": "categorical"}},
                     "split": {"test": 0.25, "validation": 0.25}}, **sections}


# ----------------------------------------------------------------------- hooks fire inside the stage

class _RaisingHooks:
    """A lifecycle plugin whose stage_started hook raises on the cleaning stage."""

    @hookimpl
    def forgeline_stage_started(self, run, stage):
        if stage.section == "clean":
            raise RuntimeError("hook exploded")


def test_a_raising_hook_names_its_plugin_and_fails_the_stage(tmp_path):
    catalog = build_catalog()
    pm = make_plugin_manager()
    pm.register(_RaisingHooks(), name="forgeline-loud-hooks:hooks")  # the registry's dist:entry-point names
    catalog.hook = pm.hook
    plan = api.load(_pipeline(_data_file(tmp_path), clean=["robust-scale"]), catalog_=catalog)
    with pytest.raises(StageError) as err:
        api.run(plan, out=tmp_path / "runs", catalog_=catalog)
    message = str(err.value)
    assert "forgeline_stage_started" in message and "'hooks'" in message and "forgeline-loud-hooks" in message
    assert "robust-scale" not in message  # not blamed on the cleaner's distribution
    manifest = json.loads(next((tmp_path / "runs").glob("*/manifest.json")).read_text())
    stages = {s["id"]: s["status"] for s in manifest["stages"]}
    assert stages == {"data": "succeeded", "clean.0": "failed"} and manifest["status"] == "failed"


# ----------------------------------------------------------------------- transforms see the schema

class _Cross(FeatureTransform):
    """Cross x1's sign with colour into a categorical column; keep the other features."""

    name = "cross-sign-colour"
    seen: list[Schema] = []

    def fit(self, X, y=None, schema=None):
        type(self).seen.append(self.input_schema(X, schema))
        self.columns_ = list(X.columns)
        return self

    def transform(self, X):
        out = X[self.columns_].copy()
        out["sign_x_colour"] = np.where(X["x1"] > 0, "pos", "neg") + "-" + X["colour"].astype(str)
        return out

    def get_feature_names_out(self, input_features=None):
        return np.asarray([*self.columns_, "sign_x_colour"], dtype=object)

    def output_schema(self):
        base = super().output_schema()
        return Schema(tuple(c if c.name != "sign_x_colour" else ColumnSpec(c.name, Role.FEATURE, Modality.CATEGORICAL)
                            for c in base.columns))


def test_a_transform_gets_the_schema_and_makes_a_categorical_column(tmp_path):
    catalog = build_catalog()
    catalog.entries.append(Entry(Kind.FEATURE_TRANSFORM, _Cross.name, _Cross, "tests", "0", "tests"))
    _Cross.seen.clear()
    run = api.run(_pipeline(_data_file(tmp_path), features=[_Cross.name]), out=tmp_path / "runs", catalog_=catalog)
    given = _Cross.seen[0]
    assert given["colour"].modality == Modality.CATEGORICAL and given["x1"].modality == Modality.NUMERIC
    schema = run.splits.train.schema
    assert schema["sign_x_colour"].modality == Modality.CATEGORICAL  # not forced to numeric
    assert schema["colour"].modality == Modality.CATEGORICAL  # passed through with its spec
    report = next(s for s in run.manifest["stages"] if s["id"] == "features.0")["report"]
    probe = report["probe"]
    assert probe["metric"] == "auc" and 0.5 < probe["before"] <= 1 and 0.5 < probe["after"] <= 1


class _Lying(_Cross):
    """Declares one column fewer than it makes."""

    name = "lying-cross"

    def output_schema(self):
        return Schema(super().output_schema().columns[:-1])


def test_the_kit_checks_a_transform_against_its_output_schema():
    check_component(_Cross)
    with pytest.raises(AssertionError, match="check_transform_schema"):
        check_component(_Lying)


# ----------------------------------------------------------------------- the kit calls fit_apply

class _Keep(Cleaner):
    """Keeps every row; fills x2 with its training mean."""

    name = "keep-rows"

    def fit(self, table, ctx=None):
        self.mean_ = float(table.frame["x2"].mean())
        return self

    def apply(self, table, ctx=None):
        kept = table.frame["x2"].fillna(self.mean_)
        frame = table.frame.assign(x2=kept)
        return CleanResult(table.with_frame(frame), table.frame.iloc[:0].assign(reason=pd.Series(dtype=str)))


class _Drifting(_Keep):
    """fit_apply fits another state than fit does."""

    name = "drifting"

    def fit_apply(self, table, ctx=None):
        result = self.fit(table, ctx).apply(table, ctx)
        self.mean_ += 1.0
        return result


class _Losing(_Keep):
    """fit_apply loses a row."""

    name = "losing"

    def fit_apply(self, table, ctx=None):
        result = self.fit(table, ctx).apply(table, ctx)
        return CleanResult(result.table.without(result.table.row_ids[:1]), result.removed)


def test_the_kit_checks_fit_apply_fits_what_fit_fits():
    assert "check_cleaner_fit_apply_once" in dict(checks_for(_Keep))
    check_component(_Keep)
    with pytest.raises(AssertionError, match="check_cleaner_fit_apply_once.*another state"):
        check_component(_Drifting)


def test_the_kit_checks_fit_apply_keeps_the_accounting():
    with pytest.raises(AssertionError, match="check_cleaner_fit_apply_once.*accounting"):
        check_component(_Losing)


# ----------------------------------------------------------------------- a context always there

def test_components_always_have_a_context_and_never_save_it():
    import pickle

    cleaner = _Keep()
    assert cleaner.context.seed == 0 and cleaner.context.artifacts is None
    ctx = StageContext(seed=7, log=lambda record: None)
    cleaner.bind(ctx).fit(make_table())
    assert cleaner.context is ctx and cleaner.using(None) is ctx
    again = pickle.loads(pickle.dumps(cleaner))
    assert again.context.seed == 0 and again.mean_ == cleaner.mean_


# ----------------------------------------------------------------------- a new kind, one declaration

EXPORTERS = '''
"""A plugin that declares a new kind, exporters, and provides one."""
from forgeline.core import Component, KindSpec, hookimpl, register_kind


class Exporter(Component):
    """Writes a trained model somewhere."""

    def export(self, model) -> str:
        raise NotImplementedError


def check_export(component):
    cls = component if isinstance(component, type) else type(component)
    assert isinstance(cls().export(None), str), "export must return where it wrote"


register_kind(KindSpec("exporter", "forgeline_exporters", Exporter, section="export", many=True,
                       stage=False, description="exporters, in order", checks=(check_export,)))


class CsvExport(Exporter):
    """Export the model's predictions as CSV."""

    kind = "exporter"
    name = "csv-export"

    def export(self, model):
        return "model.csv"


@hookimpl
def forgeline_exporters():
    return [CsvExport]
'''


@pytest.fixture(scope="module")
def exporter_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("exporters")
    folder = write_distribution(root, "forgeline-exporters-demo", "0.1.0", "forgeline_exporters_demo",
                                EXPORTERS, entry_point="exporters")
    site = root / "site"
    pip_install_target(site, folder)
    return site


def test_a_kind_declared_once_shows_in_list_schema_validate(exporter_site, run_forgeline, tmp_path):
    listed = run_forgeline("plugins", "list", "--kind", "exporter", "--json", site=exporter_site)
    assert listed.returncode == 0, listed.stderr
    assert [(e["kind"], e["name"]) for e in json.loads(listed.stdout)] == [("exporter", "csv-export")]
    schema = json.loads(run_forgeline("schema", site=exporter_site).stdout)
    export = schema["properties"]["export"]
    assert export["type"] == "array" and schema["$defs"]["exporter"]["anyOf"][1]["enum"][0] == "csv-export"
    file = tmp_path / "p.yaml"
    file.write_text("name: p\ndata: {source: wine}\nexport: [csv-export]\n")
    ok = run_forgeline("validate", str(file), site=exporter_site)
    assert ok.returncode == 0 and "valid" in ok.stdout, ok.stderr
    file.write_text("name: p\ndata: {source: wine}\nexport:\n  - csv-exprt\n")
    bad = run_forgeline("validate", str(file), site=exporter_site)
    assert bad.returncode == 2 and "p.yaml:4: export.0.use: unknown exporter 'csv-exprt'" in bad.stderr


def test_a_declared_kind_brings_its_checks_to_the_kit(exporter_site):
    sys.path.insert(0, str(exporter_site))
    try:
        import forgeline_exporters_demo as demo

        names = [name for name, _ in checks_for(demo.CsvExport)]
        assert names[-1] == "check_export" and "check_name" in names
        check_component(demo.CsvExport)
        demo.CsvExport.export = lambda self, model: None  # a broken exporter now
        with pytest.raises(AssertionError, match="check_export"):
            check_component(demo.CsvExport)
    finally:
        sys.path.remove(str(exporter_site))
        sys.modules.pop("forgeline_exporters_demo", None)
        forget_kind("exporter")


def test_a_section_no_stage_class_runs_is_refused_before_the_run(tmp_path, monkeypatch):
    from forgeline.core import runner
    from forgeline.core.stages import CompressStage

    monkeypatch.setattr(runner, "STAGES", tuple(s for s in runner.STAGES if s is not CompressStage))
    catalog = build_catalog()
    plan = api.load(_pipeline(_data_file(tmp_path)), catalog_=catalog)
    plan.parts["compress"] = [plan.dataset]  # a compressor, as far as the runner can tell
    with pytest.raises(InputError, match="compress: this forgeline version does not run this section yet"):
        api.run(plan, out=tmp_path / "runs", catalog_=catalog)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------- the shape of the core itself

CORE = Path(__import__("forgeline.core", fromlist=["core"]).__file__).parent


def test_no_function_in_core_is_longer_than_about_sixty_lines():
    import ast

    long = [f"{path.relative_to(CORE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in CORE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, long


def test_the_training_loop_reads_no_private_attribute_of_a_strategy_or_policy():
    import ast

    tree = ast.parse((CORE / "train" / "loop.py").read_text())
    owners = {"parallel", "precision", "strategy", "policy"}
    private = [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
               and any(part in owners for part in ast.unparse(node.value).split("."))]
    assert not private, private
