"""The Python API: run a pipeline from a dict, reuse a finished run, use components on their own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import forgeline.core.api as fl
from forgeline.core import InputError, StageContext, Table


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory):
    pipeline = {"name": "api-wine", "seed": 3, "data": {"source": "wine", "split": {"test": 0.25}},
                "clean": [{"use": "sigma-outliers", "with": {"k": 2.5, "action": "drop"}}, "robust-scale"],
                "train": {"model": {"use": "mlp", "with": {"hidden": [16]}}, "epochs": 3, "batch_size": 16}}
    return fl.run(pipeline, ["train.optimizer.lr=0.01"], out=tmp_path_factory.mktemp("runs"))


def test_run_from_a_dict_returns_the_run(wine_run) -> None:
    assert wine_run.dir is not None and (wine_run.dir / "manifest.json").is_file()
    assert wine_run.manifest["status"] == "succeeded"
    assert wine_run.manifest["pipeline"]["given"]["train"]["optimizer"]["lr"] == 0.01
    assert 0 <= wine_run.metrics["val_accuracy"] <= 1
    assert [stage for stage, _ in wine_run.stages] == ["clean.0", "clean.1"]
    assert wine_run.model is not None and len(wine_run.splits.train) > 0


def test_a_reopened_run_applies_the_same_fitted_stages(wine_run) -> None:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.head(40)
    direct = wine_run.apply(frame)
    reopened = fl.open_run(wine_run.dir).apply(frame)
    assert len(direct.table) + len(direct.removed) == 40
    pd.testing.assert_frame_equal(direct.table.frame, reopened.table.frame)
    # robust-scale was fitted on the run's training split, not on these rows
    assert not np.allclose(reopened.table.frame["alcohol"].median(), 0.0)


def test_bad_pipelines_raise_input_error_listing_every_problem() -> None:
    with pytest.raises(InputError) as e:
        fl.load({"name": "x", "seed": "one", "data": {"source": "wine"}, "clean": ["no-such"]})
    text = str(e.value)
    assert "seed" in text and "no-such" in text


def test_components_work_on_their_own() -> None:
    from forgeline.plugins.clean import SigmaOutliers

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": np.r_[rng.normal(size=200), 50.0], "y": rng.integers(0, 2, 201)})
    result = SigmaOutliers(k=3, action="drop").fit_apply(Table.from_frame(frame, target="y"), StageContext.standalone())
    assert result.removed.index.tolist() == [200]
    assert len(result.table) == 200 and "reason" in result.removed


def test_a_precision_policy_wraps_a_users_own_loop() -> None:
    import torch

    from forgeline.plugins.precision import FP16

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    policy = FP16()
    policy.setup(torch.device("cpu"))
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(3):
        with policy.autocast():
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        policy.backward(loss)
        policy.unscale(opt)
        assert policy.step(opt) is True
        opt.zero_grad()
    assert policy.metrics()["loss_scale"] == 2.0 ** 15
