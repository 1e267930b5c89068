"""The --nproc launcher: real torchrun ranks joining over gloo, exit codes, option handling."""

from __future__ import annotations

import sys
import textwrap

import pytest
from forgeline.core import InputError
from forgeline.core.train.launch import launch, torchrun_command

RANK_JOB = """
import os, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.txt"), "w").write(f"{dist.get_world_size()} {value.item()}")
dist.barrier()
dist.destroy_process_group()
if sys.argv[2] == "fail" and int(os.environ["RANK"]) == 1:
    sys.exit(3)
"""


@pytest.fixture()
def rank_job(tmp_path, monkeypatch):
    (tmp_path / "rank_job.py").write_text(textwrap.dedent(RANK_JOB))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_two_ranks_join_and_succeed(rank_job):
    assert launch([str(rank_job), "ok"], nproc=2, module="rank_job") == 0
    # both ranks ran in one world of two and all-reduced 1 + 2
    assert [(rank_job / f"rank{r}.txt").read_text() for r in (0, 1)] == ["2 3.0", "2 3.0"]


def test_a_failing_rank_fails_the_launch(rank_job):
    assert launch([str(rank_job), "fail"], nproc=2, module="rank_job") != 0


def test_ranks_run_the_forgeline_cli(capfd):
    assert launch(["--version"], nproc=2) == 0
    assert capfd.readouterr().out.count("version") == 2, "each rank ran the CLI"
    assert launch(["no-such-command"], nproc=2) != 0


def test_command_line_uses_standalone_unless_rendezvous_is_given():
    command = torchrun_command(["run", "p.yaml"], 4)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[3:] == ["--standalone", "--nproc-per-node", "4", "-m", "forgeline.core.cli", "run", "p.yaml"]
    several = ["--nnodes", "2", "--node_rank=1", "--rdzv-backend", "c10d", "--rdzv-endpoint", "host:29400"]
    command = torchrun_command(["run", "p.yaml"], 8, several)
    assert "--standalone" not in command
    assert command[3:] == ["--nproc-per-node", "8", *several, "-m", "forgeline.core.cli", "run", "p.yaml"]


def test_bad_launch_options_are_input_errors():
    with pytest.raises(InputError, match="--nproc"):
        torchrun_command([], 0)
    with pytest.raises(InputError, match="comes from --nproc"):
        torchrun_command([], 2, ["--nproc_per_node=4"])
