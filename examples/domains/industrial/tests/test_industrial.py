"""forgeline-industrial: conformance kit, defect synthesis masks, few-shot prototypes, INT8 export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forgeline.core import StageContext
from forgeline.registry.conformance import parametrize_with_checks
from forgeline_industrial import DefectNet, DefectSynthesis, TexturedSurfaces
from forgeline_industrial.defect_net import make_net, quantize_int8
from forgeline_industrial.fewshot import ProtoNet, episodes
from forgeline_industrial.surfaces import texture
from forgeline_industrial.synthesis import METHODS, synthesize

PIPELINE = Path(__file__).parents[1] / "pipelines" / "surface-defects.yaml"


@parametrize_with_checks([TexturedSurfaces(images=8, size=16), DefectSynthesis, DefectNet(int8=False)])
def test_conformance(component, check):
    check(component)


@pytest.mark.parametrize("method", METHODS)
def test_synthesis_changes_exactly_the_masked_pixels(method):
    rng = np.random.default_rng(0)
    img = texture(rng, 32)
    out, mask = synthesize(img, method, rng)
    assert out.shape == img.shape and mask.dtype == bool and 0 < mask.mean() < 0.6
    changed = np.abs(out - img) > 1e-6
    assert changed[mask].mean() > 0.5  # the defect is where the mask says
    if method != "spot":  # a spot's soft halo reaches just past its mask
        assert not changed[~mask].any()


def test_defect_synthesis_labels_new_rows_from_good_sources():
    table = TexturedSurfaces(images=30, size=16, seed=2).load()
    new = DefectSynthesis(copies=2).augment(table, StageContext(seed=0))
    good = table.row_ids[table.y.to_numpy() == 0]
    assert len(new) == 2 * len(good) and set(new.row_ids) == set(good) and (new.y == 1).all()
    assert not np.allclose(new.arrays["surface"], table.take(new.row_ids).arrays["surface"])


def test_episodes_and_protonet_learn_new_defect_kinds():
    import torch

    table = TexturedSurfaces(images=240, size=16, defect_rate=0.75, seed=3).load()
    x, kinds = torch.from_numpy(table.arrays["surface"]), table.frame["kind"].to_numpy()
    ep = next(episodes(kinds, 3, 2, 3, np.random.default_rng(0), 1))
    assert ep.support.shape == (3, 2) and ep.query.shape == (3, 3)
    assert all((kinds[ep.support[i]] == c).all() and (kinds[ep.query[i]] == c).all() for i, c in enumerate(ep.classes))
    base, new = np.isin(kinds, ["ok", "crack"]), np.isin(kinds, ["stain", "pit"])
    net = ProtoNet(make_net(1, 2, [8, 16]))
    losses = net.fit(x[base], kinds[base], n_way=2, k_shot=5, n_query=5, episodes_=30)
    assert len(losses) == 30 and np.isfinite(losses).all()
    # stains vs pits were never trained on: 5 examples each make the prototypes (chance: 0.5)
    assert net.accuracy(x[new], kinds[new], n_way=2, k_shot=5) > 0.58


def test_int8_copy_agrees_with_float_model():
    import torch

    torch.manual_seed(0)
    net = make_net(1, 2, [8, 16]).eval()
    x = torch.rand(32, 1, 16, 16)
    int8 = quantize_int8(net, x)
    assert type(int8.blocks[0][0]).__name__ == "ConvReLU2d" and "quantized" in type(int8.blocks[0][0]).__module__
    with torch.no_grad():
        assert torch.allclose(net(x), int8(x), atol=0.1)


def test_pipeline_reports_detection_false_alarms_and_latency(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FORGELINE_DISABLE_PLUGINS"}
    out = subprocess.run([sys.executable, str(Path(sys.executable).parent / "forgeline"), "run", str(PIPELINE),
                          "--out", str(tmp_path), "--set", "data.with.images=120", "--set", "data.with.size=16",
                          "--set", "train.epochs=2"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    run = next(tmp_path.iterdir())
    m = json.loads((run / "manifest.json").read_text())["metrics"]
    for key in ("detection_rate", "false_alarm_rate", "int8_detection_rate", "latency_b1_p50_ms",
                "latency_b1_p95_ms", "throughput_b1_per_s", "int8_latency_b1_p50_ms"):
        assert 0 <= m[f"test_{key}"], key
    assert m["test_latency_b1_p95_ms"] >= m["test_latency_b1_p50_ms"]
    import torch

    ts = torch.jit.load(str(run / "artifacts" / "evaluate" / "model-int8.ts"))
    assert ts(torch.rand(1, 1, 16, 16)).shape == (1, 2)
