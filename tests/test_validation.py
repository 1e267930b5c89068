"""Pipeline validation, overrides, assembly and authoring against a small hand-built catalog."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from forgeline.core import (Catalog, Cleaner, Dataset, Entry, InputError, Modality, Model, Monitor,
                            ParallelStrategy, Params, PrecisionPolicy, Tuner)
from forgeline.core.authoring import explain, init_yaml, pipeline_schema
from forgeline.core.validation import (apply_overrides, load_plan, pipeline_from_options,
                                       pipeline_path_problem)


# ----------------------------------------------------------------------------- the catalog

class SigmaParams(Params):
    k: float = Field(3.0, gt=0, description="distance from the mean, in standard deviations")
    action: Literal["clip", "drop"] = Field("clip", description="clip values or drop rows")


class Sigma(Cleaner):
    """Clip or drop values beyond k standard deviations."""

    name = "sigma-outliers"
    Params = SigmaParams
    modalities = frozenset({Modality.NUMERIC})


class DedupParams(Params):
    max_distance: int = Field(3, ge=0, description="simhash bits two texts may differ by")


class Dedup(Cleaner):
    """Drop near-duplicate texts."""

    name = "dedup"
    Params = DedupParams
    modalities = frozenset({Modality.TEXT})


class Wine(Dataset):
    """Wine measurements."""

    name = "wine"
    default_target = "target"
    modalities = frozenset({Modality.NUMERIC})

    def columns(self) -> list[str]:
        return ["alcohol", "ash", "target"]


class FileParams(Params):
    path: str = Field(description="the CSV file")
    sep: str = Field(",", description="field separator")


class CsvFile(Dataset):
    """Rows of a CSV file."""

    name = "file"
    Params = FileParams

    def problems(self) -> list[tuple[str, str]]:
        return [] if Path(self.params.path).stat().st_size else [("path", "file is empty")]

    def columns(self) -> list[str]:
        with open(self.params.path, newline="") as f:
            return next(csv.reader(f, delimiter=self.params.sep))


class MlpParams(Params):
    hidden: list[int] = Field(default_factory=lambda: [64], description="hidden layer widths")


class Mlp(Model):
    """A multi-layer perceptron."""

    name = "mlp"
    Params = MlpParams
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL})


class FactoryParams(Params):
    factory: str = Field(description="pkg.mod:callable building the torch module")


class Module(Model):
    """A user's own torch module."""

    name = "module"
    Params = FactoryParams


class Fp32(PrecisionPolicy):
    """Full precision."""

    name = "fp32"


class Fp16(PrecisionPolicy):
    """Half precision with loss scaling."""

    name = "fp16"

    def unsupported(self, device: Any) -> str | None:
        return None if device.type == "cuda" else f"fp16 needs a CUDA device, not {device.type}"


class Single(ParallelStrategy):
    """One process."""

    name = "single"


class Ddp(ParallelStrategy):
    """Data parallel."""

    name = "ddp"
    min_world_size = 2


class SpaceParams(Params):
    trials: int = Field(10, ge=1, description="trials to run")
    space: dict[str, dict[str, Any]] = Field(default_factory=dict, description="pipeline path -> range")


class Random(Tuner):
    """Random search."""

    name = "random"
    Params = SpaceParams


class Console(Monitor):
    """Print progress."""

    name = "console"


def entry(cls: type, dist: str = "forgeline") -> Entry:
    return Entry(cls.kind, cls.name, cls, dist, "0.1.0" if dist == "forgeline" else "2.0.0", "builtin")


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(entries=[entry(c) for c in (Sigma, Dedup, Wine, CsvFile, Mlp, Module, Fp32, Fp16, Single,
                                                Ddp, Random, Console)])


def write(tmp_path: Path, text: str, name: str = "pipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(source: Any, catalog: Catalog, *overrides: str, **kwargs: Any) -> list[str]:
    with pytest.raises(InputError) as err:
        load_plan(source, catalog, overrides, **kwargs)
    return [str(p) for p in err.value.problems]


# ----------------------------------------------------------------------------- problems

def test_every_problem_is_reported_at_once_with_its_line(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        seed: one
        data: {source: wine, split: {test: 2}}
        cleen: []
        clean:
          - use: sigma-outliers
            with:
              k: -1
              acton: drop
          - use: sigma-outlier
        """)
    assert problems(f, catalog) == [
        f"{f}:2: seed: expected an integer, got 'one'",
        f"{f}:3: data.split.test: expected a value < 1.0, got 2",
        f"{f}:4: cleen: unknown section; did you mean 'clean'?",
        f"{f}:8: clean.0.with.k: expected a value > 0.0, got -1",
        f"{f}:9: clean.0.with.acton: unknown parameter of 'sigma-outliers'; did you mean 'action'?",
        f"{f}:10: clean.1.use: unknown cleaner 'sigma-outlier'; did you mean 'sigma-outliers'?",
    ]


def test_file_level_problems(tmp_path, catalog):
    assert problems(tmp_path / "nope.yaml", catalog) == [f"{tmp_path / 'nope.yaml'}: no such file"]
    broken = write(tmp_path, "name: x\nseed: 1\n  data: [\n", "broken.yaml")
    (line,) = problems(broken, catalog)
    assert line.startswith(f"{broken}:3: malformed YAML: ")
    listed = write(tmp_path, "- name: x\n", "list.yaml")
    assert problems(listed, catalog) == [f"{listed}:1: expected a mapping of sections "
                                         "(name, data, clean, train, ...), got a list"]
    empty = write(tmp_path, "", "empty.yaml")
    assert problems(empty, catalog)[0].endswith("got an empty file")


def test_missing_field_points_at_its_parent_and_duplicates_are_caught(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data:
          target: y
        train:
          epochs: 2
          epochs: 3
        """)
    assert problems(f, catalog) == [
        f"{f}:2: data.source: required field is missing",
        f"{f}:4: train.model: required field is missing",
        f"{f}:6: train.epochs: duplicate key (also on line 5); write it once",
    ]


def test_literal_choices_get_suggestions_and_unknown_fields_list_known_ones(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wine}
        train:
          model: mlp
          optimizer: {name: sgdd, lrr: 0.1}
          device: cpu
        """)
    assert problems(f, catalog) == [
        f"{f}:5: train.optimizer.name: expected one of 'sgd', 'adam', 'adamw', got 'sgdd'; did you mean 'sgd'?",
        f"{f}:5: train.optimizer.lrr: unknown field; did you mean 'lr'?",
    ]


def test_unknown_components_of_every_kind(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wines}
        monitor: [consle]
        train:
          model: {use: mpl}
          precision: fp61
          parallel: {use: dpp}
          device: cpu
        tune: randm
        """)
    assert problems(f, catalog) == [
        f"{f}:2: data.source: unknown dataset 'wines'; did you mean 'wine'?",
        f"{f}:3: monitor.0.use: unknown monitor 'consle'; did you mean 'console'?",
        f"{f}:5: train.model.use: unknown model 'mpl'; did you mean 'mlp'?",
        f"{f}:6: train.precision.use: unknown precision-policy 'fp61'; did you mean 'fp16', 'fp32'?",
        f"{f}:7: train.parallel.use: unknown parallel-strategy 'dpp'; did you mean 'ddp'?",
        f"{f}:9: tune.use: unknown tuner 'randm'; did you mean 'random'?",
    ]


def test_modalities_target_and_columns_are_checked_against_the_dataset(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data:
          source: wine
          target: quality
          columns: {ash: {role: weight}, colour: {modality: categorical}}
        clean:
          - sigma-outliers
          - dedup
        """)
    assert problems(f, catalog) == [
        f"{f}:4: data.target: dataset 'wine' has no column 'quality' (columns: alcohol, ash, target)",
        f"{f}:5: data.columns.colour: dataset 'wine' has no column 'colour'",
        f"{f}:8: clean.1.use: 'dedup' works on text columns; dataset 'wine' has none (it has categorical, numeric)",
    ]


def test_a_text_modality_override_satisfies_a_text_cleaner(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wine, columns: {ash: {modality: text}}}
        clean: [dedup]
        """)
    assert [r.name for r in load_plan(f, catalog).stages()] == ["wine", "dedup"]


def test_precision_and_parallel_are_checked_against_device_and_processes(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wine}
        train:
          model: mlp
          precision: {use: fp16}
          parallel: ddp
          device: cpu
        """)
    assert problems(f, catalog) == [
        f"{f}:5: train.precision: fp16 needs a CUDA device, not cpu",
        f"{f}:6: train.parallel: 'ddp' needs at least 2 processes; run with --nproc 2 or more",
    ]
    assert problems(f, catalog, nproc=2) == [f"{f}:5: train.precision: fp16 needs a CUDA device, not cpu"]
    plan = load_plan(f, catalog, ["train.precision=fp32"], nproc=2)
    assert (plan.precision.name, plan.parallel.name) == ("fp32", "ddp")


# ----------------------------------------------------------------------------- data paths

def test_a_data_path_resolves_next_to_the_file_and_uses_the_file_dataset(tmp_path, catalog, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a;b;label\n1;2;0\n")
    f = write(tmp_path, """\
        name: x
        data: {source: data/rows.csv, target: label, with: {sep: ";"}}
        """, "sub.yaml")
    plan = load_plan(f, catalog)
    assert plan.dataset.name == "file"
    assert plan.dataset.params.path == str((tmp_path / "data" / "rows.csv").resolve())
    assert plan.dataset.params.sep == ";"
    assert plan.given["data"]["source"] == "data/rows.csv"  # as written

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.csv").write_text("x,label\n1,0\n")
    monkeypatch.chdir(elsewhere)  # a --set path is relative to where the command runs
    assert load_plan(f, catalog, ["data.source=other.csv", "data.with.sep=','"]).dataset.params.path == str(
        (elsewhere / "other.csv").resolve())

    missing = write(tmp_path, "name: x\ndata: {source: gone.csv}\n", "missing.yaml")
    assert problems(missing, catalog) == [f"{missing}:2: data.source: no such file: {tmp_path / 'gone.csv'}"]
    (tmp_path / "empty.csv").write_text("")
    empty = write(tmp_path, "name: x\ndata:\n  source: ./empty.csv\n", "empty.yaml")
    assert problems(empty, catalog) == [f"{empty}:3: data.source: file is empty"]
    wrong = write(tmp_path, "name: x\ndata:\n  source: data/rows.csv\n  target: lable\n  with: {sep: ';'}\n",
                  "wrong.yaml")
    assert problems(wrong, catalog) == [
        f"{wrong}:4: data.target: dataset 'file' has no column 'lable'; did you mean 'label'? "
        "(columns: a, b, label)"]


# ----------------------------------------------------------------------------- overrides

def test_overrides_set_values_create_fields_and_expand_short_forms(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wine}
        clean: [sigma-outliers]
        train: {model: mlp, device: cpu}
        """)
    plan = load_plan(f, catalog, ["clean.0.with.k=2.5", "train.optimizer.lr=0.01",
                                  "train.model.with.hidden=[8, 4]", "seed=7"])
    assert plan.clean[0].params.k == 2.5
    assert plan.pipeline.train.optimizer.lr == 0.01
    assert plan.model.params.hidden == [8, 4]
    assert plan.pipeline.seed == 7
    assert plan.given["clean"][0] == {"use": "sigma-outliers", "with": {"k": 2.5}}
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x y", "a.b=null"]) == {"a": {"b": None, "c": "x y"}}


def test_bad_overrides_name_the_set_option(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wine}
        clean: [sigma-outliers]
        """)
    assert problems(f, catalog, "clean.3.use=dedup", "name.first=a", "seed", "clean.0.with.k=-2",
                    "seed=[1") == [
        "--set clean.3.use: clean has 1 item(s); index 3 is out of range",
        "--set name.first: name is a value ('x'), not a mapping or list; it has no field 'first'",
        "--set seed: expected --set path.to.field=value (e.g. train.optimizer.lr=0.01)",
        "--set seed: value '[1' is not valid YAML (expected ',' or ']', but got '<stream end>')",
        "--set clean.0.with.k=-2: clean.0.with.k: expected a value > 0.0, got -2",
    ]


# ----------------------------------------------------------------------------- shorthands and plans

def test_model_factory_shorthand_and_provider_names(tmp_path, catalog):
    plan = load_plan({"name": "x", "data": {"source": "wine"}, "train": {"model": {"use": "my_pkg.nets:build"}}},
                     catalog, hardware=False)
    assert (plan.model.name, plan.model.params.factory) == ("module", "my_pkg.nets:build")
    plan = load_plan({"name": "x", "data": {"source": "wine"}, "train": {"model": "forgeline:mlp"}},
                     catalog, hardware=False)
    assert plan.model.name == "mlp"
    other = Catalog(entries=[*catalog.entries, entry(Mlp, "acme-models")])
    assert problems({"name": "x", "data": {"source": "wine"}, "train": {"model": "mlp"}}, other,
                    hardware=False) == ["train.model.use: model 'mlp' is registered by both acme-models and "
                                        "forgeline; write 'forgeline:mlp' or 'acme-models:mlp'"]


def test_plan_stages_resolved_and_build(tmp_path, catalog):
    f = write(tmp_path, """\
        name: demo
        seed: 3
        data: {source: wine}
        clean: [{use: sigma-outliers, with: {action: drop}}]
        train: {model: mlp, device: cpu}
        tune: {use: random, with: {space: {train.optimizer.lr: {real: [0.001, 0.1]}}}}
        monitor: [console]
        """)
    plan = load_plan(f, catalog)
    assert [s.section for s in plan.stages()] == ["data", "clean.0", "train.model", "tune"]
    assert [m.name for m in plan.monitor] == ["console"]
    resolved = plan.resolved()
    assert resolved["clean"] == [{"use": "sigma-outliers", "kind": "cleaner", "provider": "forgeline",
                                  "version": "0.1.0", "with": {"k": 3.0, "action": "drop"}}]
    assert resolved["train"]["precision"]["use"] == "fp32" and resolved["train"]["epochs"] == 1
    assert resolved["data"]["source"]["use"] == "wine"
    cleaner = plan.clean[0].build()
    assert isinstance(cleaner, Sigma) and cleaner.params.action == "drop"
    assert cleaner.params is not plan.clean[0].params
    text = explain(plan)
    assert "clean.0" in text and "sigma-outliers  [forgeline 0.1.0]" in text and "action: drop" in text


def test_tuner_space_keys_must_be_pipeline_paths(tmp_path, catalog):
    f = write(tmp_path, """\
        name: x
        data: {source: wine}
        clean: [sigma-outliers]
        train: {model: mlp, device: cpu}
        tune:
          use: random
          with:
            space:
              train.optimizer.lrr: {real: [0.001, 0.1]}
              clean.0.with.kk: {real: [2, 4]}
              clean.2.with.k: {real: [2, 4]}
              clean.0.with.k: {real: [2, 4]}
              train.model.with.hidden: {choice: [[8], [16]]}
        """)
    assert problems(f, catalog) == [
        f"{f}:9: tune.with.space.train.optimizer.lrr: train.optimizer has no field 'lrr'; did you mean 'lr'?",
        f"{f}:10: tune.with.space.clean.0.with.kk: 'sigma-outliers' has no parameter 'kk'; did you mean 'k'?",
        f"{f}:11: tune.with.space.clean.2.with.k: clean has 1 item(s); 2 is not one of them",
    ]
    assert pipeline_path_problem("data.split.test", {}) is None


# ----------------------------------------------------------------------------- assembly and authoring

def test_pipeline_from_options(catalog):
    raw = pipeline_from_options(data="wine", clean=["sigma-outliers"], train="mlp", precision="fp16",
                                epochs=3, monitor=["console"], seed=5)
    assert raw == {"name": "wine", "seed": 5, "data": {"source": "wine"},
                   "clean": [{"use": "sigma-outliers"}],
                   "train": {"model": {"use": "mlp"}, "epochs": 3, "precision": {"use": "fp16"}},
                   "monitor": [{"use": "console"}]}
    with pytest.raises(InputError, match="--precision: needs a model to train"):
        pipeline_from_options(data="wine", precision="fp16")
    with pytest.raises(InputError, match="--data: no dataset"):
        pipeline_from_options(clean=["dedup"])
    assert pipeline_from_options(data="some/dir/My Rows.csv")["name"] == "My-Rows"


def test_init_yaml_writes_every_parameter_described_and_validates(tmp_path, catalog):
    raw = pipeline_from_options(data="wine", clean=["sigma-outliers"], train="mlp", tune="random",
                                monitor=["console"])
    text = init_yaml(raw, catalog)
    f = tmp_path / "init.yaml"
    f.write_text(text)
    plan = load_plan(f, catalog, hardware=False)
    assert plan.resolved() == load_plan(raw, catalog, hardware=False).resolved()
    lines = text.splitlines()
    assert "      k: 3.0  # distance from the mean, in standard deviations; > 0" in lines
    assert "      action: clip  # clip values or drop rows" in lines
    assert "    name: adamw  # torch.optim optimizer; one of: sgd, adam, adamw" in lines
    assert "  target: target  # target column (defaults to the dataset's own)" in lines
    with_lines = [ln for ln in lines if ln.startswith("      ") and ":" in ln and not ln.strip().startswith("-")]
    assert with_lines and all("  # " in ln for ln in with_lines if "with:" not in ln)
    with pytest.raises(InputError, match="clean.0.use: unknown cleaner 'dedupe'; did you mean 'dedup'"):
        init_yaml(pipeline_from_options(data="wine", clean=["dedupe"]), catalog)


def test_pipeline_schema_expands_components(catalog):
    jsonschema = pytest.importorskip("jsonschema")
    schema = pipeline_schema(catalog)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = yaml.safe_load(init_yaml(pipeline_from_options(data="wine", clean=["sigma-outliers"], train="mlp",
                                                          tune="random", monitor=["console"]), catalog))
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({**good, "clean": ["dedup", {"use": "forgeline:dedup"}]})) == []
    bad_params = {**good, "clean": [{"use": "sigma-outliers", "with": {"k": "far"}}]}
    assert [list(e.absolute_path) for e in validator.iter_errors(bad_params)] == [["clean", 0]]
    assert list(validator.iter_errors({**good, "clean": ["no-such"]}))
    assert list(validator.iter_errors({**good, "data": {"source": "wine", "with": {"sep": ";"}}}))
    assert list(validator.iter_errors({**good, "data": {"source": "x.csv", "with": {"sep": ";"}}})) == []
