"""Hybrid 2-D parallelism: data parallel over one mesh dimension, tensor parallel over the other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from forgeline.core import DistInfo, InputError, Params, PrecisionPolicy
from pydantic import Field

from .fsdp import ShardedStrategy
from .process_group import world_problem

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.distributed.device_mesh import DeviceMesh

#: the method a model may define to give its own tensor-parallel plan
PLAN_METHOD = "parallelize_plan"


def _elementwise_types() -> tuple[type, ...]:
    """Layers that act on each feature alone, so they may sit between a column-split Linear and
    its row-split partner (the activation between them stays sharded on the feature dim)."""
    from torch import nn

    return (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU,
            nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Dropout,
            nn.AlphaDropout, nn.Identity)


def linear_pairs_plan(model: torch.nn.Module) -> dict[str, Any]:
    """Default tensor-parallel plan: in every ``nn.Sequential`` of the model, consecutive
    ``nn.Linear`` layers (with only element-wise layers between them) are paired as
    ``ColwiseParallel`` then ``RowwiseParallel`` (Megatron's MLP split: one all-reduce per pair
    in forward and one in backward). A Linear left without a partner, e.g. an MLP's output
    head after an even number of hidden layers, stays replicated on every tensor-parallel rank.
    """
    from torch import nn
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    elementwise = _elementwise_types()
    plan: dict[str, Any] = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        pending: str | None = None  # a Linear waiting for its row-split partner
        for child_name, child in module.named_children():
            path = f"{prefix}.{child_name}" if prefix else child_name
            if isinstance(child, nn.Linear):
                if pending is None:
                    pending = path
                else:
                    plan[pending], plan[path] = ColwiseParallel(), RowwiseParallel()
                    pending = None
            elif not isinstance(child, elementwise):
                pending = None  # anything mixing features breaks a pair (norms, nested blocks)
    return plan


def _replicate_parallel_style() -> type:
    """A ``ParallelStyle`` that keeps a module whole on every tensor-parallel rank, with its
    parameters as replicated DTensors on the 'tp' mesh (torch ships no such style; torchtitan
    defines the same). Then every parameter lives on the same 2-D mesh once FSDP2 shards over
    'dp', which whole-model operations such as the gradient norm need."""
    from torch.distributed.tensor import DTensor, Replicate, distribute_module
    from torch.distributed.tensor.parallel import ParallelStyle

    def inputs_to_replicated(module: Any, inputs: tuple, mesh: DeviceMesh) -> tuple:
        return tuple(DTensor.from_local(t, mesh, [Replicate()], run_check=False)
                     if hasattr(t, "dim") and not isinstance(t, DTensor) else t for t in inputs)

    def output_to_local(module: Any, output: Any, mesh: DeviceMesh) -> Any:
        return output.to_local() if isinstance(output, DTensor) else output

    class ReplicateParallel(ParallelStyle):
        def _apply(self, module: torch.nn.Module, device_mesh: DeviceMesh) -> torch.nn.Module:
            # no partition_fn: distribute_module replicates every parameter and buffer
            return distribute_module(module, device_mesh, input_fn=inputs_to_replicated,
                                     output_fn=output_to_local)

    return ReplicateParallel


def replicate_plain_modules(model: torch.nn.Module, tp_mesh: DeviceMesh) -> list[str]:
    """Give every submodule whose own parameters the plan left as plain tensors (an unpaired
    Linear, a norm) replicated parameters on ``tp_mesh``; returns their paths."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import parallelize_module

    plain = [name for name, module in model.named_modules() if name and any(
        not isinstance(p, DTensor) for p in module.parameters(recurse=False))]
    if plain:
        style = _replicate_parallel_style()
        parallelize_module(model, tp_mesh, {name: style() for name in plain})
    return plain


class HybridParams(Params):
    model_parallel: int = Field(2, ge=1, description="size of the tensor-parallel ('tp') mesh dimension; "
                                "the data-parallel ('dp') size is world size / model_parallel")
    reshard_after_forward: bool = Field(True, description="data-parallel sharding: free the gathered "
                                        "parameters after forward and gather them again in backward")


class Hybrid(ShardedStrategy):
    """2-D DeviceMesh (dp x tp): tensor-parallel layers over 'tp', FSDP2 data parallel over 'dp'.

    The tensor-parallel plan comes from the model's ``parallelize_plan(tp_mesh)`` when it has
    one, else consecutive ``nn.Linear`` pairs of its ``nn.Sequential`` blocks are split
    column-wise then row-wise; modules the plan leaves whole get replicated DTensor parameters
    on 'tp', so every parameter ends on the one 2-D mesh. The model is then sharded with ``fully_shard`` over the 'dp'
    sub-mesh (FSDP2 + TP is torch's supported 2-D recipe; DDP does not accept the DTensor
    parameters tensor parallelism leaves). Tensor-parallel ranks of one data-parallel group
    train on the same batch.
    """

    name = "hybrid"
    Params = HybridParams
    min_world_size: ClassVar[int] = 2

    def unsupported(self, dist: DistInfo) -> str | None:
        problem = world_problem(self.name, dist, max(self.min_world_size, self.params.model_parallel))
        if problem:
            return problem
        if dist.world_size % self.params.model_parallel:
            return (f"parallel strategy 'hybrid': world size {dist.world_size} is not divisible by "
                    f"model_parallel {self.params.model_parallel}; use a multiple of it for --nproc")
        return None

    def setup(self, dist: DistInfo) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        super().setup(dist)
        tp = self.params.model_parallel
        self.mesh = init_device_mesh(self.device.type, (dist.world_size // tp, tp), mesh_dim_names=("dp", "tp"))

    def data_replica(self) -> tuple[int, int]:
        dp = self.mesh["dp"]
        return dp.get_local_rank(), dp.size()

    def tensor_parallel_plan(self, model: torch.nn.Module, tp_mesh: DeviceMesh) -> dict[str, Any]:
        """The model's own plan when it defines ``parallelize_plan``, else :func:`linear_pairs_plan`."""
        own = getattr(model, PLAN_METHOD, None)
        plan = own(tp_mesh) if callable(own) else linear_pairs_plan(model)
        if not isinstance(plan, dict):
            raise InputError(f"parallel strategy 'hybrid': {type(model).__name__}.{PLAN_METHOD}() returned "
                             f"{type(plan).__name__}; it must return a dict of module path -> ParallelStyle")
        if not plan and tp_mesh.size() > 1:
            raise InputError(f"parallel strategy 'hybrid': {type(model).__name__} has no pair of consecutive "
                             f"nn.Linear layers in an nn.Sequential to split over {tp_mesh.size()} tensor-parallel "
                             f"ranks; give the model a {PLAN_METHOD}(tp_mesh) method, or use model_parallel: 1, "
                             "ddp or fsdp")
        return plan

    def wrap(self, model: torch.nn.Module, precision: PrecisionPolicy) -> torch.nn.Module:
        from torch.distributed.tensor.parallel import parallelize_module

        model = model.to(self.device)
        tp_mesh = self.mesh["tp"]
        self.plan = self.tensor_parallel_plan(model, tp_mesh)
        if self.plan:
            parallelize_module(model, tp_mesh, self.plan)
            self.replicated = replicate_plain_modules(model, tp_mesh)
        # no child units: tensor-parallel layers are already split, one dp unit keeps it simple
        return self._fully_shard(model, self.mesh["dp"], precision, min_unit_params=None)
