"""Distributed data parallel: a full model copy per rank, gradients all-reduced in buckets."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

from forgeline.core import Params, PrecisionPolicy
from pydantic import Field, model_validator

from .process_group import CommClock, DistributedStrategy

if TYPE_CHECKING:  # pragma: no cover
    import torch


class DDPParams(Params):
    bucket_cap_mb: float = Field(25.0, gt=0, description="size of a gradient bucket in MiB: smaller buckets "
                                 "start communicating earlier in backward, larger ones make fewer calls")
    find_unused_parameters: bool = Field(False, description="walk the autograd graph each step to find "
                                         "parameters that got no gradient (needed when some layers are skipped)")
    static_graph: bool = Field(False, description="the set of used parameters never changes between steps, "
                               "letting DDP optimise its bookkeeping")
    gradient_as_bucket_view: bool = Field(False, description="gradients are views into the communication "
                                          "buckets, saving one copy and the memory of the gradients")
    compression: Literal["none", "fp16", "bf16", "powersgd"] = Field(
        "none", description="gradient compression hook: none (float32 all-reduce), fp16 or bf16 (cast "
        "before the all-reduce, halving traffic), powersgd (low-rank PowerSGD with error feedback)")
    powersgd_rank: int = Field(1, ge=1, description="powersgd: rank of the low-rank approximation "
                               "(higher: more accurate, more traffic)")
    start_powersgd_iter: int = Field(1000, ge=2, description="powersgd: plain all-reduce for this many "
                                     "iterations first (torch's warm-up; PowerSGD needs at least 2)")

    @model_validator(mode="after")
    def _powersgd_options_only_with_powersgd(self) -> DDPParams:
        # compared with the defaults, not the fields set: a full dump of the params round-trips
        changed = {name for name in ("powersgd_rank", "start_powersgd_iter")
                   if getattr(self, name) != type(self).model_fields[name].default}
        if changed and self.compression != "powersgd":
            raise ValueError(f"{', '.join(sorted(changed))} only apply with compression: powersgd "
                             f"(compression is {self.compression!r})")
        return self


class DDP(DistributedStrategy):
    """Distributed data parallel: each rank holds the model, gradients are all-reduced in buckets.

    Every bucket goes through a communication hook (torch's all-reduce, or the fp16/bf16/
    PowerSGD compression hook) wrapped in a timer, so ``comm_share()`` reports the share of
    step time spent in gradient communication.
    """

    name = "ddp"
    Params = DDPParams

    def _comm_hook(self) -> tuple[Any, Any]:
        """(state, hook) of the chosen compression; the state None means the default group."""
        from torch.distributed.algorithms.ddp_comm_hooks import (
            default_hooks,
            powerSGD_hook,
        )

        compression = self.params.compression
        if compression == "powersgd":
            state = powerSGD_hook.PowerSGDState(
                process_group=None, matrix_approximation_rank=self.params.powersgd_rank,
                start_powerSGD_iter=self.params.start_powersgd_iter)
            return state, powerSGD_hook.powerSGD_hook
        hook = {"none": default_hooks.allreduce_hook, "fp16": default_hooks.fp16_compress_hook,
                "bf16": default_hooks.bf16_compress_hook}[compression]
        return None, hook

    def wrap(self, model: torch.nn.Module, precision: PrecisionPolicy) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        model = model.to(self.device)
        ddp = DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=self.params.bucket_cap_mb,
            find_unused_parameters=self.params.find_unused_parameters,
            static_graph=self.params.static_graph,
            gradient_as_bucket_view=self.params.gradient_as_bucket_view)
        self.clock = CommClock()
        state, hook = self._comm_hook()
        ddp.register_comm_hook(state, self.clock.timed_hook(hook))
        ddp.register_forward_pre_hook(self.clock.forward_pre_hook)
        return ddp

    def no_sync(self, model: torch.nn.Module) -> AbstractContextManager:
        return model.no_sync()

    def comm_share(self) -> float | None:
        clock = getattr(self, "clock", None)
        return clock.share() if clock is not None else None
