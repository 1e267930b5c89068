"""``forgeline validate / explain / schema / init`` through the real CLI, in a subprocess."""

from __future__ import annotations

import json

import pytest
import yaml

import forgeline.registry

pytestmark = pytest.mark.skipif(not hasattr(forgeline.registry, "build_catalog"),
                                reason="forgeline.registry.build_catalog has not landed")


def check_input_error(result, file) -> list[str]:
    """Exit 2, no traceback, every stderr line naming the file; returns the lines."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert lines and all(line.startswith(f"{file}") for line in lines), lines
    return lines


def test_validate_reports_every_problem_with_file_and_line(tmp_path, run_forgeline):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nseed: 1\n  data: [\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\nseed: 1\ndata: {source: wine}\nclean:\n  - use: no-such-cleaner\n")
    three = tmp_path / "three.yaml"
    three.write_text("name: x\nseed: one\ndata: {source: wine, split: {test: 2}}\ncleen: []\n")

    (line,) = check_input_error(run_forgeline("validate", str(broken)), broken)
    assert line.startswith(f"{broken}:3: malformed YAML")
    (line,) = check_input_error(run_forgeline("validate", str(unknown)), unknown)
    assert line.startswith(f"{unknown}:5: clean.0.use: unknown cleaner 'no-such-cleaner'")
    assert check_input_error(run_forgeline("validate", str(three)), three) == [
        f"{three}:2: seed: expected an integer, got 'one'",
        f"{three}:3: data.split.test: expected a value < 1.0, got 2",
        f"{three}:4: cleen: unknown section; did you mean 'clean'?",
    ]


def test_init_validate_explain_schema_round_trip(tmp_path, run_forgeline):
    jsonschema = pytest.importorskip("jsonschema")
    pipe = tmp_path / "conf" / "wine.yaml"
    made = run_forgeline("init", str(pipe), "--data", "wine", "--train", "mlp", "--monitor", "console",
                         "--epochs", "2")
    assert made.returncode == 0, made.stderr
    text = pipe.read_text()
    assert "  epochs: 2  # passes over the training split; >= 1" in text and "      hidden: [" in text
    assert all("  # " in line for line in text.splitlines() if line.strip().startswith(("hidden:", "lr:")))

    again = run_forgeline("init", str(pipe), "--data", "wine")
    assert check_input_error(again, pipe) == [f"{pipe}: already exists; pass --force to overwrite it"]

    valid = run_forgeline("validate", str(pipe), "--set", "train.optimizer.lr=0.01")
    assert (valid.returncode, valid.stdout.strip()) == (0, f"{pipe}: valid (wine -> mlp)"), valid.stderr

    explained = run_forgeline("explain", str(pipe), "--json", "--set", "train.batch_size=8")
    assert explained.returncode == 0, explained.stderr
    resolved = json.loads(explained.stdout)
    assert resolved["train"]["batch_size"] == 8 and resolved["train"]["epochs"] == 2
    assert resolved["train"]["model"]["provider"] == "forgeline" and resolved["train"]["model"]["with"]
    assert resolved["monitor"][0]["use"] == "console"

    schema = run_forgeline("schema")
    assert schema.returncode == 0, schema.stderr
    validator = jsonschema.Draft202012Validator(json.loads(schema.stdout))
    doc = yaml.safe_load(text)
    assert list(validator.iter_errors(doc)) == []
    doc["train"]["model"]["with"]["hiden"] = [3]
    assert list(validator.iter_errors(doc))


def test_init_and_set_problems_exit_2_with_suggestions(tmp_path, run_forgeline):
    pipe = tmp_path / "p.yaml"
    result = run_forgeline("init", str(pipe), "--data", "wine", "--train", "mlpp", "--monitor", "consol")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    model, monitor = result.stderr.splitlines()
    assert model == "train.model.use: unknown model 'mlpp'; did you mean 'mlp'?"
    assert monitor.startswith("monitor.0.use: unknown monitor 'consol'; did you mean 'console'")
    assert not pipe.exists()

    pipe.write_text("name: x\ndata: {source: wine}\n")
    bad = run_forgeline("validate", str(pipe), "--set", "seed=many", "--set", "clean.2.use=dedup")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [
        "--set clean.2.use: clean has 0 item(s); index 2 is out of range",
        "--set seed=many: seed: expected an integer, got 'many'",
    ]
