"""Built-in models: encodings fitted on train only, modules that learn, TP plan, user factories."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

from forgeline.core import DataSpec, InputError, Modality, Table
from forgeline.plugins.models import CNN, GRU, MLP, TCN, CustomModule, TextClassifier, forgeline_models

torch.set_num_threads(1)


def spec_for(model, x: torch.Tensor, n_outputs: int = 2, task: str = "classification") -> DataSpec:
    return DataSpec(task, n_outputs, tuple(x.shape[1:]))


def train_losses(model, table: Table, y: np.ndarray, steps: int = 40, lr: float = 1e-2) -> list[float]:
    """Fit encodings, build, then full-batch Adam steps; the loss after each step."""
    torch.manual_seed(0)
    model.fit_inputs(table)
    x = model.inputs(table)
    n_classes = int(y.max()) + 1
    module = model.build(spec_for(model, x, n_classes))
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    target = torch.tensor(np.asarray(y), dtype=torch.int64)
    losses = []
    module.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def tabular(n: int = 120, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n)
    a = rng.normal(size=n)
    y = ((a + np.where(colour == "red", 1.5, -0.5)) > 0).astype(int)
    frame = pd.DataFrame({"a": a, "colour": colour, "note": [f"free text {i}" for i in range(n)], "y": y})
    return Table.from_frame(frame, "y", overrides={"colour": {"modality": "categorical"},
                                                   "note": {"modality": "text"}})


# ------------------------------------------------------------------ every model learns its data kind

def test_mlp_learns_a_table():
    table = tabular()
    losses = train_losses(MLP(hidden=[32, 16]), table, table.y.to_numpy())
    assert losses[-1] < 0.5 * losses[0]


def images(n: int = 64, seed: int = 0) -> tuple[Table, np.ndarray]:
    """Class 0: a bright left half; class 1: a bright right half (plus noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    img = rng.normal(0, 0.3, size=(n, 1, 8, 8)).astype(np.float32)
    img[y == 0, :, :, :4] += 1.0
    img[y == 1, :, :, 4:] += 1.0
    return Table.from_frame(pd.DataFrame({"y": y}), "y", arrays={"image": img}), y


def test_cnn_learns_images():
    table, y = images()
    losses = train_losses(CNN(channels=[8, 16]), table, y, steps=30)
    assert losses[-1] < 0.5 * losses[0]


def series(n: int = 64, seed: int = 0) -> tuple[Table, np.ndarray]:
    """Class 0: a slow sine; class 1: a fast sine (random phase, noise), 2 channels x 32 steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    t = np.arange(32)
    freq = np.where(y == 0, 0.05, 0.25)[:, None]
    wave = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    arr = np.stack([wave, rng.normal(0, 0.2, (n, 32))], axis=1).astype(np.float32)
    return Table.from_frame(pd.DataFrame({"y": y}), "y", arrays={"signal": arr}), y


@pytest.mark.parametrize("model", [GRU(hidden=16, bidirectional=True), TCN(channels=[8, 8, 8])],
                         ids=["gru", "tcn"])
def test_series_models_learn(model):
    table, y = series()
    losses = train_losses(model, table, y, steps=40)
    assert losses[-1] < 0.5 * losses[0]


def reviews(n: int = 80, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good, bad, filler = ["great", "lovely", "works"], ["broken", "awful", "refund"], ["the", "item", "was", "it"]
    texts = [" ".join(rng.choice(filler, 3).tolist() + rng.choice(good if label else bad, 2).tolist()).capitalize()
             for label in y]
    return Table.from_frame(pd.DataFrame({"review": texts, "y": y}), "y",
                            overrides={"review": {"modality": "text"}})


def test_text_classifier_learns_words():
    table = reviews()
    losses = train_losses(TextClassifier(embed_dim=16, hidden=[16]), table, table.y.to_numpy(), steps=40)
    assert losses[-1] < 0.5 * losses[0]


def test_regression_outputs_one_value_per_row():
    table = tabular()
    model = MLP(hidden=[8])
    model.fit_inputs(table)
    x = model.inputs(table)
    out = model.build(DataSpec("regression", 1, tuple(x.shape[1:])))(x)
    assert out.shape == (len(table), 1)


# ------------------------------------------------------------------ encodings: fitted on train only

def test_tabular_encoding_uses_training_medians_levels_and_zeros_for_unknown():
    train = Table.from_frame(pd.DataFrame({"a": [1.0, 2.0, 10.0, np.nan], "c": ["x", "y", "x", "y"], "t": [0] * 4}),
                             "t", overrides={"c": {"modality": "categorical"}})
    test = Table.from_frame(pd.DataFrame({"a": [np.nan, 5.0], "c": ["z", "y"], "t": [0, 0]}), "t",
                            schema=train.schema)
    model = MLP()
    model.fit_inputs(train)
    assert model.feature_names == ("a", "c=x", "c=y")
    x = model.inputs(test).numpy()
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[2.0, 0, 0], [5.0, 0, 1]])  # NaN -> train median 2; unseen 'z' -> zeros


def test_tabular_encoding_keeps_most_frequent_levels_and_reports_dropped_columns():
    table = tabular()
    model = MLP(max_levels=2)
    model.fit_inputs(table)
    assert model.dropped_columns == ["note"]
    assert len([f for f in model.feature_names if f.startswith("colour=")]) == 2
    with pytest.raises(InputError, match="note"):
        MLP(other_columns="error").fit_inputs(table)


def test_tabular_encoding_rejects_bad_tables():
    text_only = reviews()
    with pytest.raises(InputError, match="mlp: the table has no numeric or categorical"):
        MLP().fit_inputs(text_only)
    empty = Table.from_frame(pd.DataFrame({"a": [np.nan, np.nan], "t": [0, 1]}), "t")
    with pytest.raises(InputError, match=r"\['a'\] have no values"):
        MLP().fit_inputs(empty)
    model = MLP()
    model.fit_inputs(tabular())
    infinite = tabular()
    infinite.frame.loc[infinite.row_ids[0], "a"] = np.inf
    with pytest.raises(InputError, match=r"\['a'\] hold infinite values"):
        model.inputs(infinite)
    with pytest.raises(InputError, match="missing"):
        model.inputs(Table.from_frame(pd.DataFrame({"a": [1.0], "y": [0]}), "y"))


def test_text_encoding_vocabulary_from_train_unknown_words_and_padding():
    train = Table.from_frame(pd.DataFrame({"txt": ["Good good day", "bad day", "rare"], "y": [1, 0, 1]}), "y",
                             overrides={"txt": {"modality": "text"}})
    test = Table.from_frame(pd.DataFrame({"txt": ["GOOD unseen", None], "y": [1, 0]}), "y", schema=train.schema)
    model = TextClassifier(min_freq=2)  # 'rare' and 'good' (one text) drop out; 'day' is in two texts
    model.fit_inputs(train)
    assert set(model.encoder.vocabulary) == {"day"}
    model = TextClassifier(max_len=2)
    model.fit_inputs(train)
    ids = model.inputs(test)
    assert ids.dtype == torch.int64 and ids.shape == (2, 2)  # longest train text (3 tokens) capped at 2
    good = model.encoder.vocabulary["good"]
    assert ids.tolist() == [[good, 1], [0, 0]]  # unknown word -> 1, missing text -> padding
    module = model.build(DataSpec("classification", 2, (2,)))
    assert module.embedding.num_embeddings == model.encoder.vocab_size


def test_array_encoding_standardizes_with_training_statistics_and_checks_shapes():
    table, _ = images(16)
    model = CNN()
    model.fit_inputs(table)
    x = model.inputs(table).numpy()
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-3
    shifted = Table.from_frame(pd.DataFrame({"y": [0]}), "y", arrays={"image": table.arrays["image"][:1] + 5})
    assert model.inputs(shifted).mean() > x[:1].mean() + 1  # train statistics, not refitted
    wrong = Table.from_frame(pd.DataFrame({"y": [0]}), "y", arrays={"image": np.zeros((1, 1, 4, 4), np.float32)})
    with pytest.raises(InputError, match=r"shape \(1, 4, 4\)"):
        model.inputs(wrong)
    nan = table.arrays["image"].copy()
    nan[3, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN values in 1 rows"):
        CNN().fit_inputs(Table.from_frame(pd.DataFrame({"y": np.zeros(16)}), "y", arrays={"image": nan}))
    with pytest.raises(InputError, match="no image feature column"):
        CNN().fit_inputs(tabular())


def test_series_accept_two_dimensional_arrays_as_one_channel():
    arr = np.random.default_rng(0).normal(size=(10, 20)).astype(np.float32)
    table = Table.from_frame(pd.DataFrame({"y": np.zeros(10)}), "y", arrays={"s": arr})
    model = GRU(hidden=4)
    model.fit_inputs(table)
    assert model.inputs(table).shape == (10, 1, 20)


# ------------------------------------------------------------------ tensor-parallel plan

def test_mlp_parallelize_plan_pairs_hidden_linears():
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    model = MLP(hidden=[16, 16, 16, 16, 8], dropout=0.1)
    model.fit_inputs(tabular())
    x = model.inputs(tabular())
    module = model.build(spec_for(model, x))
    linears = [name for name, m in module.named_children() if isinstance(m, torch.nn.Linear)]
    plan = module.parallelize_plan(None)
    assert list(plan) == linears[:4]  # two pairs; the fifth hidden layer and the head stay replicated
    assert [type(plan[n]) for n in linears[:4]] == [ColwiseParallel, RowwiseParallel] * 2
    assert isinstance(module[-1], torch.nn.Linear) and module[-1].out_features == 2

    bn = MLP(hidden=[8, 8], batch_norm=True)
    bn.fit_inputs(tabular())
    with pytest.raises(InputError, match="batch_norm"):
        bn.build(spec_for(bn, x)).parallelize_plan(None)


# ------------------------------------------------------------------ user factories

FACTORY_SOURCE = textwrap.dedent("""
    import torch

    CALLS = []

    def make(spec, width=4):
        CALLS.append((spec, width))
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(spec.input_shape[0], width),
                                   torch.nn.ReLU(), torch.nn.Linear(width, spec.n_outputs))

    class Builders:
        @staticmethod
        def text(spec):
            return torch.nn.EmbeddingBag(spec.extra["vocab_size"], spec.n_outputs)

    not_a_module = lambda spec: "nope"
    NUMBER = 3
""")


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"user_factories_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_module_factory_is_imported_and_called_with_spec_and_kwargs(factory_module):
    table = tabular()
    model = CustomModule(factory=f"{factory_module}:make", kwargs={"width": 7})
    losses = train_losses(model, table, table.y.to_numpy(), steps=40)
    assert losses[-1] < 0.7 * losses[0]
    spec, width = sys.modules[factory_module].CALLS[-1]
    assert width == 7 and spec.input_shape == (4,) and spec.feature_names[0] == "a"
    assert spec.extra["numeric"] == ["a"]

    text = CustomModule(factory=f"{factory_module}:Builders.text", inputs="text")
    text.fit_inputs(reviews())
    ids = text.inputs(reviews())
    assert ids.dtype == torch.int64
    out = text.build(DataSpec("classification", 2, tuple(ids.shape[1:])))(ids)
    assert out.shape == (80, 2)


@pytest.mark.parametrize("bad", ["pkg.mod", "pkg.mod:", ":fn", "pkg mod:fn", "pkg.mod:fn()", "os.system('x'):y",
                                 "a..b:c", "pkg/mod:fn"])
def test_module_factory_strings_are_validated(bad):
    with pytest.raises(pydantic.ValidationError, match="factory"):
        CustomModule(factory=bad)


def test_module_factory_errors_name_the_problem(factory_module):
    table = tabular()
    cases = {"no_such_package_xyz.mod:fn": "cannot import 'no_such_package_xyz.mod'",
             f"{factory_module}:missing": "has no attribute 'missing'",
             f"{factory_module}:NUMBER": "not a callable",
             f"{factory_module}:not_a_module": "returned a str, expected a torch.nn.Module"}
    for ref, message in cases.items():
        model = CustomModule(factory=ref)
        model.fit_inputs(table)
        with pytest.raises(InputError, match=message):
            model.build(DataSpec("classification", 2, (4,)))


# ------------------------------------------------------------------ packaging properties

def test_fitted_models_and_built_modules_pickle():
    cases = [(MLP(hidden=[4]), tabular()), (CNN(channels=[4]), images(8)[0]), (GRU(hidden=4), series(8)[0]),
             (TCN(channels=[4]), series(8)[0]), (TextClassifier(hidden=[4]), reviews(8))]
    for model, table in cases:
        model.fit_inputs(table)
        x = model.inputs(table)
        module = model.build(spec_for(model, x)).eval()
        copy = pickle.loads(pickle.dumps(module))
        assert type(copy) is type(module) and type(copy).__module__.startswith("forgeline.plugins.models.")
        torch.testing.assert_close(copy(x), module(x))
        again = pickle.loads(pickle.dumps(model))
        torch.testing.assert_close(again.inputs(table), x)


def test_registration_and_declared_modalities():
    by_name = {cls.name: cls for cls in forgeline_models()}
    assert set(by_name) == {"mlp", "cnn", "gru", "tcn", "text-classifier", "module"}
    assert by_name["cnn"].modalities == {Modality.IMAGE}
    assert by_name["text-classifier"].modalities == {Modality.TEXT}
    for cls in by_name.values():
        assert cls.summary() and all(f.description for f in cls.Params.model_fields.values())


def test_importing_the_plugins_does_not_import_torch():
    code = ("import sys, forgeline.plugins.models, forgeline.plugins.monitor; "
            "heavy = [m for m in ('torch', 'pandas', 'sklearn', 'rich', 'psutil', 'prometheus_client') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


TP_SCRIPT = textwrap.dedent("""
    import copy, os, sys
    import numpy as np, pandas as pd, torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import parallelize_module
    from forgeline.core import DataSpec, Table
    from forgeline.plugins.models import MLP

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    table = Table.from_frame(pd.DataFrame({"a": rng.normal(size=16), "b": rng.normal(size=16),
                                           "y": rng.integers(0, 3, 16)}), "y")
    model = MLP(hidden=[8, 6])
    model.fit_inputs(table)
    x = model.inputs(table)
    module = model.build(DataSpec("classification", 3, tuple(x.shape[1:])))
    reference = copy.deepcopy(module)
    mesh = init_device_mesh("cpu", (2,))
    parallelize_module(module, mesh, module.parallelize_plan(mesh))
    torch.testing.assert_close(module(x), reference(x))
    local_rows = module[0].weight.to_local().shape[0]
    module(x).sum().backward()
    reference(x).sum().backward()
    torch.testing.assert_close(module[-1].weight.grad, reference[-1].weight.grad)
    print(f"rank {dist.get_rank()} ok, local rows {local_rows}")
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_mlp_plan_runs_tensor_parallel_on_two_processes(tmp_path):
    script = tmp_path / "tp.py"
    script.write_text(TP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 ok, local rows 4" in done.stdout and "rank 1 ok, local rows 4" in done.stdout
