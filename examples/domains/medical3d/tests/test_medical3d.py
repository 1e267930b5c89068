"""forgeline-medical3d: conformance kit, augmentation invariants, progressive schedule, metrics."""

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
from forgeline_medical3d import CNN3D, CTAugment3D, CTNodules, ProgressiveResolution
from forgeline_medical3d.cnn3d import detections

PIPELINE = Path(__file__).parents[1] / "pipelines" / "ct-nodules.yaml"


@parametrize_with_checks([CTNodules(volumes=6, size=12), CTAugment3D(crop=1.0), ProgressiveResolution, CNN3D])
def test_conformance(component, check):
    check(component)


@pytest.fixture(scope="module")
def cases():
    return CTNodules(volumes=12, size=20, seed=1).load()


def test_volumes_are_ct_like_with_nodules(cases):
    v = cases.arrays["ct"]
    assert v.shape == (12, 1, 20, 20, 20) and v.dtype == np.float32
    nod = cases.meta["nodules"]
    assert set(nod.index) == set(cases.row_ids[cases.y.to_numpy() == 1])
    assert -950 < np.median(v[:, 0, 6:14, 6:14, 6:14]) < -700  # parenchyma inside...
    assert np.median(v[:, 0, :2, :2, :2]) > -200  # ...a soft-tissue wall
    rid = nod.index[0]
    z, y, x = np.round(nod.loc[[rid], ["z", "y", "x"]].to_numpy()[0]).astype(int)
    assert v[cases.positions([rid])[0], 0, z, y, x] > -300  # the nodule is solid tissue


def test_augmentation_keeps_shape_labels_and_nodules(cases):
    aug = CTAugment3D(copies=2, crop=0.7, rotate=20)
    new = aug.augment(cases, StageContext(seed=0))
    assert len(new) == 24 and new.arrays["ct"].shape == (24, 1, 20, 20, 20)
    assert list(new.row_ids) == list(np.repeat(cases.row_ids, 2)) and new.y.equals(cases.y.loc[new.row_ids])
    assert not np.allclose(new.arrays["ct"][::2], cases.arrays["ct"])
    # nodule-keeping crops: every nodule centre still holds tissue (not the air padding)
    only_crop = CTAugment3D(symmetry=0, rotate=0, elastic_alpha=0, gamma=(1, 1), noise_hu=0, crop=0.6)
    cropped = only_crop.augment(cases, StageContext(seed=5))
    for rid, nod in cases.meta["nodules"].iterrows():
        z, y, x = np.round(nod[["z", "y", "x"]].to_numpy(float)).astype(int)
        assert cropped.arrays["ct"][cases.positions([rid])[0], 0, z, y, x] > -300
    assert (cropped.arrays["ct"] == -1000.0).any()  # the padding is air


def test_progressive_resolution_grows_over_epochs():
    import torch

    prog = ProgressiveResolution(start=0.5, ramp=0.5)
    x, y = torch.rand(2, 1, 16, 16, 16), torch.tensor([0, 1])
    sizes = []
    for epoch in range(5):
        prog.set_epoch(epoch, 5)
        out, _ = prog.augment_batch(x, y, torch.Generator())
        sizes.append(out.shape[-1])
    assert sizes == [8, 12, 16, 16, 16]
    assert prog.augment_batch({"x": x, "target": y}, torch.Generator(), None)["x"].shape[-1] == 16


def test_detection_metrics_count_hits_and_false_positives(cases):
    heat = np.zeros((len(cases), 20, 20, 20))
    nod = cases.meta["nodules"]
    for rid, n in nod.iterrows():  # a perfect detector...
        z, y, x = np.round(n[["z", "y", "x"]].to_numpy(float)).astype(int)
        heat[cases.positions([rid])[0], z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 1
    assert detections(heat, cases, 0.5) == {"fp_per_volume": 0.0, "sensitivity": 1.0}
    heat[:, 0:2, 0:2, 0:2] = 1  # ...plus one false alarm in a corner of every volume
    assert detections(heat, cases, 0.5)["fp_per_volume"] == 1.0


def test_pipeline_reports_sensitivity_fp_and_uncertainty(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FORGELINE_DISABLE_PLUGINS"}
    out = subprocess.run([sys.executable, str(Path(sys.executable).parent / "forgeline"), "run", str(PIPELINE),
                          "--out", str(tmp_path), "--set", "data.with.volumes=40", "--set", "data.with.size=16",
                          "--set", "train.epochs=2"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    run = next(tmp_path.iterdir())
    metrics = json.loads((run / "manifest.json").read_text())["metrics"]
    for key in ("test_sensitivity", "test_fp_per_volume", "test_mc_variance_mean", "test_tta_variance_mean"):
        assert key in metrics and metrics[key] >= 0
    rows = (run / "artifacts" / "evaluate" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "row_id,label,probability,mc_variance,tta_probability,tta_variance" and len(rows) == 11
