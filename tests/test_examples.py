"""Every example pipeline validates, and the training scenarios train (shrunk to test size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "pipelines").glob("*.yaml"))


def forgeline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgeline.core.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates(example: Path) -> None:
    r = forgeline("validate", str(example))
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


@pytest.mark.parametrize(("example", "sets", "metric", "floor"), [
    ("digits-cnn", ["train.epochs=2"], "val_accuracy", 0.8),                      # images, bf16
    ("signals-tcn", ["data.with.rows=400", "train.epochs=3"], "val_accuracy", 0.4),  # series (chance 0.25)
    ("signals-tcn", ["data.with.rows=200", "train.epochs=1", "train.precision=fp16"], "val_loss", None),
])
def test_training_examples_learn(example: str, sets: list[str], metric: str, floor: float | None, tmp_path: Path) -> None:
    args = [a for s in sets for a in ("--set", s)]
    path = next(p for p in EXAMPLES if p.stem == example)
    r = forgeline("run", str(path), "--out", str(tmp_path), "--json", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["status"] == "succeeded"
    value = summary["metrics"][metric]
    assert value == value  # finite, not NaN
    if floor is not None:
        assert value > floor
