"""FSDP2: parameters, gradients and optimizer state sharded over ranks with ``fully_shard``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from forgeline.core import Params, PrecisionPolicy
from pydantic import Field

from .process_group import DistributedStrategy

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.distributed.device_mesh import DeviceMesh


def mixed_precision_policy(precision: PrecisionPolicy) -> Any:
    """FSDP2's ``MixedPrecisionPolicy``: parameters all-gathered in the policy's compute dtype,
    gradients reduced in float32 (full-precision reduction keeps the sum of many ranks exact)."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = precision.compute_dtype
    if dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def gathered_to_cpu(value: Any) -> Any:
    """``value`` (a state dict, nested) with every DTensor gathered whole and every tensor on CPU.

    Collective: every rank must walk the same structure. Tensors are gathered one at a time,
    so device memory peaks at one full tensor, not the whole model.
    """
    import torch
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: gathered_to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(gathered_to_cpu(item) for item in value)
    return value


class ShardedStrategy(DistributedStrategy):
    """Base of the strategies built on ``fully_shard``: gradient-sync control and full
    (gathered) checkpoint states through ``torch.distributed.checkpoint.state_dict``.

    ``model_state`` gives every rank the full model state on CPU (the training loop rebuilds
    the unwrapped model on every rank from it). ``optimizer_state`` is gathered to CPU on rank
    0 only (``cpu_offload``; the other ranks get an empty dict), since only rank 0 writes
    checkpoints. Loading broadcasts rank 0's full state into every rank's shards, so only
    rank 0 needs to pass it.
    """

    def no_sync(self, model: torch.nn.Module) -> AbstractContextManager:
        return self._gradient_sync_off(model)

    @contextlib.contextmanager
    def _gradient_sync_off(self, model: torch.nn.Module) -> Iterator[None]:
        # FSDP2 keeps the unsharded gradients and skips the reduce-scatter while sync is off
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    @staticmethod
    def _options(loading: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        if loading:
            return StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def model_state(self, model: torch.nn.Module) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        # the sharded state (FQNs cleaned by torch), then gathered here rather than with
        # full_state_dict=True: that gathers either to rank 0 only (cpu_offload) or all at once
        # on the device, and every rank needs the weights without holding the model on its GPU
        return gathered_to_cpu(get_model_state_dict(model, options=StateDictOptions()))

    def unwrap(self, model: torch.nn.Module, fresh: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """A fresh, unsharded module holding the gathered weights (every rank takes part)."""
        full = fresh()
        full.load_state_dict(self.model_state(model))
        return full

    def grad_norm(self, parameters: list[torch.Tensor], max_norm: float | None = None) -> torch.Tensor:
        """The total norm over all shards: torch returns it as a DTensor here, made whole."""
        norm = super().grad_norm(parameters, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def load_model_state(self, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, dict(state), options=self._options(loading=True))

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=self._options(loading=False))

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             state: Mapping[str, Any]) -> None:
        import torch.distributed as tdist
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        # torch's loader places rank 0's tensors by the device of the optimizer's own state, and
        # a stateless optimizer (plain SGD) has none: then only hyper-parameters are restored
        saved = [state.get("param_groups") if not state.get("state") else None]
        tdist.broadcast_object_list(saved, src=0)
        if saved[0] is None:
            set_optimizer_state_dict(model, optimizer, dict(state), options=self._options(loading=True))
            return
        for group, saved_group in zip(optimizer.param_groups, saved[0], strict=True):
            group.update({key: value for key, value in saved_group.items() if key != "params"})

    def _fully_shard(self, model: torch.nn.Module, mesh: DeviceMesh, precision: PrecisionPolicy,
                     min_unit_params: int | None) -> torch.nn.Module:
        """``fully_shard`` each large enough child as its own unit (None: no child units), then the root."""
        from torch.distributed.fsdp import fully_shard

        policy = mixed_precision_policy(precision)
        reshard = self.params.reshard_after_forward
        child_units = 0
        if min_unit_params is not None:
            for child in model.children():
                size = sum(p.numel() for p in child.parameters())
                if size and size >= min_unit_params:
                    fully_shard(child, mesh=mesh, reshard_after_forward=reshard, mp_policy=policy)
                    child_units += 1
        # the root unit holds what no child took; with child units it keeps its parameters after
        # forward (torch's advice: backward needs the root first, resharding it would only cost
        # an extra all-gather)
        root_reshard = reshard and not child_units
        return fully_shard(model, mesh=mesh, reshard_after_forward=root_reshard, mp_policy=policy)


class FSDPParams(Params):
    reshard_after_forward: bool = Field(True, description="free each unit's gathered parameters after its "
                                        "forward and gather them again in backward (less memory, more "
                                        "communication); false keeps them until backward")
    min_unit_params: int = Field(1, ge=1, description="a direct child of the model with at least this many "
                                 "parameters becomes its own FSDP unit (gathered just in time); smaller "
                                 "children are gathered with the root")


class FSDP(ShardedStrategy):
    """Fully sharded data parallel (FSDP2 ``fully_shard``): parameters, gradients and optimizer
    state sharded over ranks, mixed precision from the precision policy.

    Each direct child of the model holding at least ``min_unit_params`` parameters is a unit
    of its own, the root takes the rest. Accumulation windows keep gradients unsharded and
    skip the reduce-scatter on all but the last micro-batch.
    """

    name = "fsdp"
    Params = FSDPParams

    def wrap(self, model: torch.nn.Module, precision: PrecisionPolicy) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh

        self.mesh = init_device_mesh(self.device.type, (self.dist.world_size,), mesh_dim_names=("dp",))
        return self._fully_shard(model.to(self.device), self.mesh, precision, self.params.min_unit_params)
