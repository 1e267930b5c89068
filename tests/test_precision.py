"""Precision policies on the CPU: autocast dtypes, fp16 loss scaling with an injected overflow,
scale growth, tf32 switches, and losses close to fp32 through the real training loop."""

from __future__ import annotations

import pytest
import torch
from forgeline.core import Augmenter, InputError
from forgeline.core.train.loop import fit
from forgeline.plugins import precision as precision_plugin
from forgeline.plugins.precision import BF16, FP16, FP32, TF32
from test_train_loop import make_job

CPU = torch.device("cpu")


def test_registration_hook_lists_the_policies():
    classes = precision_plugin.forgeline_precision_policies()
    assert [c.name for c in classes] == ["fp32", "tf32", "bf16", "fp16"]
    assert all(c.summary() for c in classes)
    assert all(f.description for c in classes for f in c.Params.model_fields.values())


@pytest.mark.parametrize("policy, dtype", [(FP32(), torch.float32), (BF16(), torch.bfloat16), (FP16(), torch.float16)])
def test_autocast_region_computes_in_the_policy_dtype(policy, dtype):
    policy.setup(CPU)
    layer = torch.nn.Linear(4, 3)
    with policy.autocast():
        out = layer(torch.randn(2, 4))
    assert out.dtype == dtype
    assert layer(torch.randn(2, 4)).dtype == torch.float32  # outside the region: full precision
    assert policy.compute_dtype == (None if dtype == torch.float32 else dtype)


def test_tf32_is_unsupported_on_cpu_and_restores_its_switches():
    from forgeline.plugins.precision.policies import _tf32_switches

    policy = TF32()
    assert "no effect on cpu" in policy.unsupported(CPU)
    with pytest.raises(InputError, match="train.precision: tf32: .*use fp32"):
        fit(make_job(precision=TF32()))
    before = _tf32_switches()
    policy.setup(CPU)  # the switches are process-wide flags, settable without a GPU
    assert _tf32_switches() == {"matmul": "tf32", "conv": "tf32"}
    policy.teardown()
    assert _tf32_switches() == before


def _fp16_step(policy, model, opt, sched, poison: bool) -> bool:
    loss = model(torch.randn(8, 4)).square().mean()
    policy.backward(loss)
    if poison:  # an fp16 overflow: one gradient past 65504 becomes inf
        next(model.parameters()).grad[0, 0] = float("inf")
    policy.unscale(opt)
    stepped = policy.step(opt)
    opt.zero_grad(set_to_none=True)
    if stepped:
        sched.step()
    return stepped


def test_fp16_overflow_skips_the_step_and_backs_the_scale_off():
    torch.manual_seed(0)
    policy = FP16(growth_interval=2000)
    policy.setup(CPU)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert policy.metrics() == {"loss_scale": 2.0 ** 15, "skipped_steps": 0.0}
    assert _fp16_step(policy, model, opt, sched, poison=False)
    before = [p.detach().clone() for p in model.parameters()]
    lr_before = opt.param_groups[0]["lr"]
    assert not _fp16_step(policy, model, opt, sched, poison=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # weights untouched
    assert opt.param_groups[0]["lr"] == lr_before  # scheduler did not step
    assert policy.metrics() == {"loss_scale": 2.0 ** 14, "skipped_steps": 1.0}
    assert _fp16_step(policy, model, opt, sched, poison=False)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fp16_scale_grows_after_growth_interval_clean_steps_and_round_trips():
    policy = FP16(init_scale=1024, growth_interval=3, growth_factor=4, backoff_factor=0.25)
    policy.setup(CPU)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for _ in range(2):
        _fp16_step(policy, model, opt, sched, poison=False)
    assert policy.metrics()["loss_scale"] == 1024
    _fp16_step(policy, model, opt, sched, poison=False)
    assert policy.metrics()["loss_scale"] == 4096
    _fp16_step(policy, model, opt, sched, poison=True)
    assert policy.metrics() == {"loss_scale": 1024, "skipped_steps": 1.0}
    restored = FP16()
    restored.load_state_dict(policy.state_dict())  # before setup: applied once the scaler exists
    restored.setup(CPU)
    assert restored.metrics() == policy.metrics()


class OverflowAt(Augmenter):
    """Makes one micro-batch's input huge so that its fp16 gradients overflow (test)."""

    name = "overflow-at"
    per_sample, per_batch = False, True

    def __init__(self, call: int):
        super().__init__()
        self.call, self.calls = call, 0

    def augment_batch(self, batch, generator, spec):
        self.calls += 1
        return {**batch, "x": batch["x"] * 1e30} if self.calls == self.call else batch


def test_fit_with_an_injected_overflow_skips_logs_and_holds_the_scheduler():
    records = []
    job = make_job(n=64, epochs=1, batch_size=8, log_every=1, precision=FP16(init_scale=256),
                   optimizer={"name": "sgd", "lr": 0.1}, scheduler={"name": "step", "step_size": 1, "gamma": 0.5},
                   log=records.append)
    job.batch_augmenters = [OverflowAt(call=3)]
    result = fit(job)
    steps = [r for r in records if r["event"] == "step"]
    assert [r["skipped_steps"] for r in steps] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert [r["loss_scale"] for r in steps] == [256, 256, 128, 128, 128, 128, 128, 128]
    # lr logged after each step: halves on real steps only, so step 3 keeps step 2's rate
    assert [r["lr"] for r in steps] == [0.1 * 0.5 ** k for k in (1, 2, 2, 3, 4, 5, 6, 7)]
    assert result.steps == 8 and result.report["skipped_steps"] == 1


@pytest.mark.parametrize("policy", [BF16, FP16])
def test_half_precision_training_lands_close_to_fp32(policy):
    train = dict(epochs=5, batch_size=16, optimizer={"name": "adam", "lr": 0.02})
    ref = fit(make_job(**train)).metrics
    low = fit(make_job(precision=policy(), **train)).metrics
    assert low["val_loss"] == pytest.approx(ref["val_loss"], abs=0.05)
    assert low["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=0.05)
