"""Parallel strategies: parameters and checks on one process, and each distributed strategy
with real processes on gloo, compared with a plain single-process PyTorch step."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from forgeline.core import DistInfo, InputError, PrecisionPolicy
from forgeline.plugins.parallel import (
    DDP,
    FSDP,
    Hybrid,
    Single,
    forgeline_parallel_strategies,
)
from forgeline.plugins.parallel.process_group import CommClock, epoch_positions
from pydantic import ValidationError

N_SAMPLES, N_FEATURES = 16, 4


# --------------------------------------------------------------------------- shared helpers

def _data():
    import torch

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_SAMPLES, N_FEATURES, generator=gen)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(N_SAMPLES, 1, generator=gen)
    return x, y


def _model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))


def _loss(model, x, y):
    import torch

    return torch.nn.functional.mse_loss(model(x), y)


def _accumulate_two(strategy, model, x, y, mine) -> None:
    """Backward over two micro-batches of ``mine``, gradients synced only on the second."""
    half = len(mine) // 2
    with strategy.no_sync(model):
        (_loss(model, x[mine[:half]], y[mine[:half]]) / 2).backward()
    (_loss(model, x[mine[half:]], y[mine[half:]]) / 2).backward()


def _reference_steps(batches, lr=0.1):
    """A plain single-process SGD run on the full batches: the parity target."""
    import torch

    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for x, y in batches:
        optimizer.zero_grad()
        _loss(model, x, y).backward()
        optimizer.step()
    return model


def _assert_close(state, reference, atol=1e-6):
    import torch

    assert set(state) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(state[key].float().cpu(), value.float(), atol=atol, rtol=1e-5, msg=key)


def _same_on_every_rank(model):
    """True when every parameter is bit-identical on all ranks (max == min over ranks)."""
    import torch
    import torch.distributed as tdist

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    tdist.all_reduce(high, op=tdist.ReduceOp.MAX)
    tdist.all_reduce(low, op=tdist.ReduceOp.MIN)
    return torch.equal(high, low)


def _gather(obj):
    import torch.distributed as tdist

    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_then_exit(rank, worker, nprocs, *args):
    """``worker``, then leave as forgeline's ranks do (``core.cli.rank_main``): without the
    interpreter's teardown, where gloo's threads can abort a process whose work is done."""
    worker(rank, nprocs, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(worker, nprocs, monkeypatch, *args):
    """Run ``worker(rank, nprocs, *args)`` in ``nprocs`` real processes joined over gloo;
    an assertion failing in any rank fails the test with that rank's traceback."""
    import torch.multiprocessing as mp

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for attempt in range(3):
        monkeypatch.setenv("MASTER_PORT", str(_free_port()))
        try:
            return mp.spawn(_run_then_exit, args=(worker, nprocs, *args), nprocs=nprocs, join=True)
        except mp.ProcessRaisedException as e:
            # the free port was taken by another test run before rank 0 bound it: try another
            if "EADDRINUSE" not in str(e) or attempt == 2:
                raise


def _start(strategy, rank, world):
    import torch

    torch.set_num_threads(1)
    strategy.setup(DistInfo(rank=rank, world_size=world, local_rank=rank))
    return strategy


class BF16Policy(PrecisionPolicy):
    """A bf16 compute dtype, enough to drive FSDP2's mixed precision."""

    name = "test-bf16"

    @property
    def compute_dtype(self):
        import torch
        return torch.bfloat16


# --------------------------------------------------------------------------- one process

def test_registration_names_every_strategy():
    classes = forgeline_parallel_strategies()
    assert [c.name for c in classes] == ["single", "ddp", "fsdp", "hybrid"]
    for cls in classes:
        assert cls.summary()
        for name, field in cls.Params.model_fields.items():
            assert field.description, f"{cls.name}.{name} has no description"


def test_plugin_import_does_not_import_torch():
    code = "import sys, forgeline.plugins.parallel; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_epoch_positions_pad_like_distributed_sampler():
    import torch
    from torch.utils.data import DistributedSampler

    for n, replicas in [(10, 3), (7, 2), (8, 4), (2, 4)]:
        parts = [epoch_positions(n, 3, 5, True, rank, replicas) for rank in range(replicas)]
        assert len({len(p) for p in parts}) == 1, "every replica gets the same count"
        joined = np.concatenate(parts)
        assert set(joined) == set(range(n)), "the replicas together cover every sample"
        assert len(joined) - n < replicas, "padding is less than one sample per replica"
        # the same split as torch's own sampler when it orders by arange (no shuffle)
        for rank in range(replicas):
            sampler = DistributedSampler(torch.arange(n), num_replicas=replicas, rank=rank, shuffle=False)
            assert list(epoch_positions(n, 0, 0, False, rank, replicas)) == list(sampler)
    first, second = epoch_positions(20, 0, 1, True, 0, 1), epoch_positions(20, 1, 1, True, 0, 1)
    assert sorted(first) == sorted(second) and list(first) != list(second), "each epoch reshuffles"


def test_unsupported_worlds_are_explained():
    assert "one process" in Single().unsupported(DistInfo(world_size=2))
    assert Single().unsupported(DistInfo()) is None
    import torch
    if torch.cuda.device_count() < 8:
        assert "'cuda:7'" in Single(device="cuda:7").unsupported(DistInfo())
    assert "--nproc 2" in Hybrid().unsupported(DistInfo(world_size=1))
    assert "not divisible" in Hybrid(model_parallel=2).unsupported(DistInfo(world_size=3))
    assert "--nproc 4" in Hybrid(model_parallel=4).unsupported(DistInfo(world_size=2))
    assert Hybrid(model_parallel=2).unsupported(DistInfo(world_size=4)) is None
    assert DDP().unsupported(DistInfo(world_size=2)) is None
    with pytest.raises(InputError, match="one process"):
        Single().setup(DistInfo(world_size=2))


def test_parameters_are_checked():
    with pytest.raises(ValidationError, match="only apply with compression: powersgd"):
        DDP(powersgd_rank=4)
    with pytest.raises(ValidationError):
        DDP(compression="int8")
    with pytest.raises(ValidationError, match="unknown device"):
        Single(device="gpu0")
    with pytest.raises(ValidationError):
        Hybrid(model_parallel=0)
    assert DDP(compression="powersgd", powersgd_rank=2).params.powersgd_rank == 2


def test_single_wraps_on_its_device_and_splits_nothing():
    strategy = Single(device="cpu")
    strategy.setup(DistInfo())
    assert strategy.dist.device.type == "cpu"
    model = strategy.wrap(_model(), PrecisionPolicy())
    assert next(model.parameters()).device.type == "cpu"
    assert sorted(strategy.shard(9, 0, 0)) == list(range(9))
    assert strategy.reduce({"loss": 2.0}) == {"loss": 2.0}


def test_comm_clock_counts_overlap_once_and_pauses_for_evaluation():
    import torch

    clock = CommClock()
    module = torch.nn.Linear(1, 1)
    clock.forward_pre_hook(module.train(), ())
    clock._intervals += [(clock._running_since, clock._running_since + 0.002),
                         (clock._running_since + 0.001, clock._running_since + 0.003)]
    time.sleep(0.01)  # 10 ms of "training"
    with torch.no_grad():
        clock.forward_pre_hook(module.eval(), ())  # evaluation pauses the clock
    trained = clock._trained
    share = clock.share()
    assert share == pytest.approx(0.003 / trained)
    assert clock.share() is None, "no training since the last call"


# --------------------------------------------------------------------------- DDP, two processes

def _ddp_worker(rank, world):
    import torch

    x, y = _data()
    # one step on each rank's shard equals one full-batch step on one process
    strategy = _start(DDP(), rank, world)
    model = strategy.wrap(_model(), PrecisionPolicy())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    mine = strategy.shard(N_SAMPLES, epoch=0, seed=0, shuffle=False)
    assert len(mine) == N_SAMPLES // world
    _loss(model, x[mine], y[mine]).backward()
    optimizer.step()
    assert _same_on_every_rank(model)
    _assert_close(strategy.model_state(model), _reference_steps([(x, y)]).state_dict())

    # accumulation: no all-reduce on the first micro-batch, the big-batch gradient after the last
    model.zero_grad()
    reference = copy.deepcopy(model.module)
    _loss(reference, x, y).backward()
    half = len(mine) // 2
    calls = strategy.clock.hook_calls
    with strategy.no_sync(model):
        (_loss(model, x[mine[:half]], y[mine[:half]]) / 2).backward()
    assert strategy.clock.hook_calls == calls, "no_sync must skip gradient communication"
    (_loss(model, x[mine[half:]], y[mine[half:]]) / 2).backward()
    assert strategy.clock.hook_calls > calls
    for (name, p), q in zip(model.module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)

    share = strategy.comm_share()
    assert isinstance(share, float) and 0.0 < share < 1.0

    # metrics are averaged over ranks; positions are disjoint and cover the data
    assert strategy.reduce({"loss": float(rank + 1), "n": 4.0}) == {"loss": 1.5, "n": 4.0}
    for n in (N_SAMPLES, 7):
        parts = _gather(strategy.shard(n, epoch=2, seed=3).tolist())
        assert len({len(p) for p in parts}) == 1
        assert set().union(*map(set, parts)) == set(range(n))
        if n % world == 0:
            assert not set(parts[0]) & set(parts[1])
    strategy.teardown()


def _ddp_compression_worker(rank, world):
    import torch
    import torch.distributed as tdist

    x, y = _data()
    torch.set_num_threads(1)
    # one world for the three strategies (re-creating it on the same port races with the old store)
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    steps = 4  # PowerSGD compresses from its third iteration on
    # each step's two shards cover the data once, so the exact step is the full-batch step
    exact = _reference_steps([(x, y)] * steps, lr=0.05).state_dict()
    for params in ({"compression": "fp16"}, {"compression": "bf16"},
                   {"compression": "powersgd", "powersgd_rank": 1, "start_powersgd_iter": 2}):
        strategy = _start(DDP(params), rank, world)
        model = strategy.wrap(_model(), PrecisionPolicy())
        initial_loss = _loss(model.module, x, y).item()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for epoch in range(steps):
            mine = strategy.shard(N_SAMPLES, epoch=epoch, seed=0)
            optimizer.zero_grad()
            _loss(model, x[mine], y[mine]).backward()
            optimizer.step()
        assert _same_on_every_rank(model), params
        share = strategy.comm_share()
        assert isinstance(share, float) and 0.0 < share < 1.0, (params, share)
        assert strategy.clock.hook_calls >= 4
        if params["compression"] == "powersgd":  # low-rank: not the exact step, but still descends
            assert _loss(model.module, x, y).item() < initial_loss
        else:  # a 16-bit cast of the averaged gradient stays close to the exact step
            _assert_close(strategy.model_state(model), exact, atol=2e-2)
        strategy.teardown()
        assert tdist.is_initialized(), "a strategy leaves a world it did not create"
    tdist.destroy_process_group()


def test_ddp_matches_single_process_and_skips_sync_when_accumulating(monkeypatch):
    _spawn(_ddp_worker, 2, monkeypatch)


def test_ddp_compression_hooks_run_and_report_comm_share(monkeypatch):
    _spawn(_ddp_compression_worker, 2, monkeypatch)


# --------------------------------------------------------------------------- FSDP2, two processes

def _fsdp_worker(rank, world):
    import torch
    from torch.distributed.tensor import DTensor

    x, y = _data()
    strategy = _start(FSDP(), rank, world)
    model = strategy.wrap(_model(), PrecisionPolicy())
    assert isinstance(model[0].weight, DTensor), "parameters are sharded"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):  # each step accumulates two micro-batches, syncing only on the last
        mine = strategy.shard(N_SAMPLES, epoch=epoch, seed=0)
        _accumulate_two(strategy, model, x, y, mine)
        optimizer.step()
        optimizer.zero_grad()
    # the ranks' shards cover the data once per step, so the parity target is the full-batch step
    reference = _reference_steps([(x, y)] * 3)

    state = strategy.model_state(model)  # collective: every rank gets the full state on CPU
    assert all(type(v) is torch.Tensor and v.device.type == "cpu" for v in state.values())
    _assert_close(state, reference.state_dict(), atol=1e-5)
    optim_state = strategy.optimizer_state(model, optimizer)  # rank 0 only: the checkpoint writer
    assert (rank == 0) == bool(optim_state)
    if rank == 0:
        assert set(optim_state["param_groups"][0]["params"]) == set(reference.state_dict())
    optimizer.param_groups[0]["lr"] = 0.5
    strategy.load_optimizer_state(model, optimizer, optim_state if rank == 0 else {})
    assert optimizer.param_groups[0]["lr"] == 0.1, "rank 0's optimizer state reached every rank"
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    _loss(model, x, y).backward()
    adam.step()
    adam_state = strategy.optimizer_state(model, adam)
    model.zero_grad(set_to_none=True)  # as on resume: a new optimizer, no gradients yet
    restored = torch.optim.Adam(model.parameters(), lr=0.02)
    strategy.load_optimizer_state(model, restored, adam_state if rank == 0 else {})
    again = strategy.optimizer_state(model, restored)
    if rank == 0:
        assert again["param_groups"][0]["lr"] == 0.01
        for key, moments in adam_state["state"].items():
            torch.testing.assert_close(again["state"][key]["exp_avg"], moments["exp_avg"], msg=key)

    # loading a full state (given on rank 0 only) reaches every rank's shards
    initial = _model().state_dict()
    strategy.load_model_state(model, initial if rank == 0 else {})
    _assert_close(strategy.model_state(model), initial)
    fresh = _model()
    fresh.load_state_dict(strategy.model_state(model))  # what the loop does to unwrap the model

    # a bf16 policy computes in bf16 and keeps the float32 sharded master weights
    seen = []
    mixed = strategy.wrap(_model(), BF16Policy())
    mixed[2].register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
    out = mixed(x)
    assert seen == [torch.bfloat16] and out.dtype == torch.bfloat16
    assert mixed[2].weight.dtype == torch.float32
    out.float().sum().backward()
    assert mixed[2].weight.grad.dtype == torch.float32
    strategy.teardown()


def test_fsdp2_matches_single_process_and_gathers_full_state(monkeypatch):
    _spawn(_fsdp_worker, 2, monkeypatch)


# --------------------------------------------------------------------------- hybrid 2-D mesh

def _hybrid_worker(rank, world, tp):
    import torch
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    x, y = _data()
    strategy = _start(Hybrid(model_parallel=tp), rank, world)
    dp = world // tp
    assert strategy.mesh.mesh_dim_names == ("dp", "tp") and tuple(strategy.mesh.shape) == (dp, tp)
    model = strategy.wrap(_model(), PrecisionPolicy())
    assert {k: type(v) for k, v in strategy.plan.items()} == {"0": ColwiseParallel, "2": RowwiseParallel}
    # the split layers hold a slice of their weights; the unpaired head is whole on every tp rank
    assert isinstance(model[0].weight, DTensor)
    assert model[0].weight.to_local().shape[0] == 16 // tp // dp
    assert model[4].weight.full_tensor().shape == (1, 8)
    assert strategy.replicated == ["4"] and model[4].weight.device_mesh.ndim == model[0].weight.device_mesh.ndim

    # tp ranks of one dp group see the same batch; dp groups see disjoint ones
    positions = _gather(strategy.shard(N_SAMPLES, epoch=0, seed=0).tolist())
    groups = strategy.mesh.mesh.tolist()  # rows: dp index, columns: tp index -> global rank
    for row in groups:
        assert all(positions[r] == positions[row[0]] for r in row)
    if dp > 1:
        assert not set(positions[groups[0][0]]) & set(positions[groups[1][0]])

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):  # the second step accumulates two micro-batches, syncing on the last
        mine = strategy.shard(N_SAMPLES, epoch=epoch, seed=0)
        if epoch == 0:
            _loss(model, x[mine], y[mine]).backward()
        else:
            _accumulate_two(strategy, model, x, y, mine)
        optimizer.step()
        optimizer.zero_grad()
    # the dp groups' shards cover the data once per step: the parity target is the full-batch step
    reference = _reference_steps([(x, y)] * 2)
    _assert_close(strategy.model_state(model), reference.state_dict(), atol=1e-5)
    # whole-model gradient operations work: every parameter lives on the same 2-D mesh
    mine = strategy.shard(N_SAMPLES, epoch=2, seed=0)
    _loss(model, x[mine], y[mine]).backward()
    reference.zero_grad()
    _loss(reference, x, y).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9)
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm=1e9)
    torch.testing.assert_close(norm.full_tensor(), expected, atol=1e-5, rtol=1e-5)
    optim_state = strategy.optimizer_state(model, optimizer)
    assert (rank == 0) == bool(optim_state)
    assert strategy.reduce({"loss": float(rank)}) == {"loss": (world - 1) / 2}
    strategy.teardown()


def test_hybrid_tensor_parallel_over_two_processes(monkeypatch):
    _spawn(_hybrid_worker, 2, monkeypatch, 2)


@pytest.mark.slow
def test_hybrid_data_by_tensor_parallel_over_four_processes(monkeypatch):
    _spawn(_hybrid_worker, 4, monkeypatch, 2)


def test_hybrid_explains_a_model_it_cannot_split():
    import torch
    from torch import nn

    class NoPairs(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(x)

    class OwnPlan(NoPairs):
        def parallelize_plan(self, tp_mesh):
            return {"head": "not-a-plan"} if tp_mesh is None else ["head"]

    class FakeMesh:
        def size(self):
            return 2

    with pytest.raises(InputError, match="parallelize_plan"):
        Hybrid().tensor_parallel_plan(NoPairs(), FakeMesh())
    with pytest.raises(InputError, match="must return a dict"):
        Hybrid().tensor_parallel_plan(OwnPlan(), FakeMesh())
    # an element-wise layer keeps a pair together, a norm between two Linears breaks it
    from forgeline.plugins.parallel.hybrid import linear_pairs_plan
    assert set(linear_pairs_plan(nn.Sequential(nn.Linear(2, 4), nn.GELU(), nn.Dropout(), nn.Linear(4, 2)))) == {"0", "3"}
    assert linear_pairs_plan(nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 2))) == {}
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)), nn.Linear(2, 1))
    assert set(linear_pairs_plan(nested)) == {"0.0", "0.2"}
    assert torch.is_tensor(nested(torch.zeros(1, 2)))


@pytest.mark.parametrize("strategy", [Single, DDP, FSDP, Hybrid], ids=lambda cls: cls.name)
def test_conformance_kit_in_a_world_of_one(strategy):
    """ddp and fsdp also run as one process (an in-memory store, no torchrun); hybrid needs two."""
    from forgeline.registry.conformance import check_component

    skipped = check_component(strategy)
    assert skipped == (["check_parallel_single_process"] if strategy is Hybrid else [])
