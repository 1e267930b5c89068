"""Augmenters through the CLI: the users' config shape, and bad input as one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HEAD = "name: t\nseed: 0\ndata:\n  source: {source}\n  with: {with_}\n"


def _pipeline(tmp_path: Path, source: str, augment: str, with_: str = "{}") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD.format(source=source, with_=with_) + augment)
    return path


@pytest.mark.parametrize(("source", "with_", "augment", "expected"), [
    ("digits", "{as_image: true}", "augment:\n  - use: image\n    with: {transforms: [{colour_jitter: [0.8]}]}\n",
     "p.yaml:8: augment.0.with.transforms: unknown albumentations transform 'colour_jitter'; closest: color_jitter"),
    ("digits", "{as_image: true}", "augment:\n  - use: image\n    with: {transforms: [{affine: {rotation: 3}}]}\n",
     "Affine has no argument 'rotation'; closest: rotate"),
    ("reviews", "{rows: 50}", "augment:\n  - use: image\n",
     "augment.0.use: 'image' works on image columns; dataset 'reviews' has none (it has text)"),
    ("signals", "{rows: 50}", "augment:\n  - use: text-eda\n",
     "'text-eda' works on text columns; dataset 'signals' has none (it has series)"),
    ("reviews", "{rows: 50}", "augment:\n  - use: text-eda\n    with: {random_swap: 1.5}\n",
     "augment.0.with.random_swap"),
    ("reviews", "{rows: 50}", "augment:\n  text_augmentation: {synonym_replacement: 0.3, shuffle: 0.5}\n",
     "augment.text_augmentation.shuffle: no augmenter of 'text_augmentation' takes 'shuffle'"),
    ("reviews", "{rows: 50}", "augment: missing.json\n", "missing.json: no such file"),
    ("reviews", "{rows: 50}", "augment:\n  - use: text-eda\n    with: {synonym_replacement: 0.3, wordnet: /nowhere}\n",
     "WordNet folder '/nowhere' does not exist"),
])
def test_bad_augment_input_is_one_line_and_exit_2(run_forgeline, tmp_path, source, with_, augment, expected):
    r = run_forgeline("validate", str(_pipeline(tmp_path, source, augment, with_)))
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr


def test_the_users_config_shape_becomes_components(run_forgeline, tmp_path):
    (tmp_path / "aug.json").write_text(json.dumps({
        "text_augmentation": {"synonym_replacement": 0.3, "random_insertion": 0.2, "sentence_shuffle": 0.5},
        "image_augmentation": {"cutmix_alpha": 1.0, "mixup_alpha": 0.4, "color_jitter": [0.8, 0.8, 0.8, 0.2]}}))
    (tmp_path / "d.csv").write_text("text,label\nfine words here,1\nbad words there,0\n")
    path = _pipeline(tmp_path, "d.csv", "augment: aug.json\n")
    r = run_forgeline("explain", str(path), "--json")
    assert r.returncode == 0, r.stderr
    stages = {s["section"]: s for s in json.loads(r.stdout)["stages"]} if "stages" in r.stdout else None
    text = r.stdout
    assert '"text-eda"' in text and '"mixup"' in text and '"image"' in text
    assert '"cutmix_alpha": 1.0' in text and '"alpha": 0.4' in text and '"random_swap": 0.0' in text
    assert stages is None or len([k for k in stages if k.startswith("augment")]) == 3


def test_text_eda_runs_with_no_network(tmp_path):
    """The thesaurus and tokenizers are read from installed files: a run in a network namespace
    with no network at all succeeds."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"]).returncode != 0:
        pytest.skip("unshare -rn (a network namespace) is not available here")
    path = _pipeline(tmp_path, "reviews", "augment:\n  text_augmentation: {synonym_replacement: 0.5, "
                     "random_insertion: 0.5, sentence_shuffle: 0.5}\n", "{rows: 40}")
    r = subprocess.run(["unshare", "-rn", sys.executable, "-m", "forgeline.core.cli", "run", str(path),
                        "--out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    run = Path(json.loads(r.stdout)["run_dir"]) if "run_dir" in r.stdout else next(tmp_path.glob("t-*"))
    provenance = json.loads(next((run / "stages").glob("augment.0-text-eda-provenance.json")).read_text())
    assert len(provenance["row_id"]) == len(provenance["source_row_id"]) > 0
