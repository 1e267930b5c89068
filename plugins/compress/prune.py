"""``prune``: structured pruning that really removes channels (torch-pruning), or whole blocks.

Channel mode builds torch-pruning's dependency graph, so every layer coupled to a pruned
channel (the next conv's inputs, batch norms, residual additions) shrinks with it; the
output layer is never pruned. Layer mode replaces the shape-preserving blocks that cost the
least validation score with ``Identity``. Both then fine-tune. What changed the architecture
(``shapes_``, ``removed_``) is plain data, so a pruned checkpoint loads into a freshly
built model after :func:`restore`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from forgeline.core import CompressContext, Compressor, Params

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def n_params(model: nn.Module) -> int:
    """Weights and biases, counting quantised modules' packed weights too."""
    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        w = getattr(m, "weight", None)
        if callable(w) and not list(m.parameters(recurse=False)):  # quantised conv/linear
            total += w().numel() + (m.bias().numel() if callable(getattr(m, "bias", None)) and m.bias() is not None else 0)
    return total


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Shape of every weight, by module name: what a rebuilt model must be resized to."""
    import torch

    return {name: list(m.weight.shape) for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)}


def restore(model: nn.Module, shapes: dict[str, list[int]], removed: list[str]) -> nn.Module:
    """Resize a freshly built model to a pruned architecture so the pruned weights load.

    Each layer gets empty tensors of the recorded shapes and its size attributes updated
    (what torch-pruning changed); removed blocks become ``Identity``."""
    import torch
    from torch import nn

    for name in removed:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    for name, shape in shapes.items():
        m = model.get_submodule(name)
        m.weight = nn.Parameter(torch.empty(shape))
        if isinstance(getattr(m, "bias", None), torch.Tensor):
            m.bias = nn.Parameter(torch.empty(shape[0]))
        if isinstance(m, nn.modules.conv._ConvNd):
            m.out_channels, m.in_channels = shape[0], shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = shape
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_features = shape[0]
            m.running_mean, m.running_var = torch.zeros(shape[0]), torch.ones(shape[0])
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            pass
    return model


class Prune(Compressor):
    """Structured pruning: remove a share of channels (dependency-aware) or whole blocks, then fine-tune."""

    name = "prune"

    class Params(Params):
        ratio: float = Field(0.5, gt=0, lt=1, description="share of channels (or of removable blocks) to remove")
        granularity: Literal["channel", "layer"] = Field("channel", description="channel: remove channels of every "
                                                         "layer; layer: remove whole shape-preserving blocks")
        importance: Literal["magnitude", "taylor"] = Field("magnitude", description="channel importance: L2 weight "
                                                           "magnitude, or first-order Taylor (weight x gradient)")
        steps: int = Field(1, ge=1, description="prune in this many rounds, fine-tuning after each")
        epochs: int = Field(1, ge=0, description="fine-tuning epochs after each round")
        taylor_batches: int = Field(4, ge=1, description="training batches whose gradients score Taylor importance")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.shapes_: dict[str, list[int]] = {}
        self.removed_: list[str] = []
        self.params_before_: int | None = None
        self.params_after_: int | None = None

    def compress(self, model: nn.Module, ctx: CompressContext) -> nn.Module:
        self.params_before_ = n_params(model)
        if self.params.granularity == "channel":
            model = self._channels(model, ctx)
        else:
            model = self._layers(model, ctx)
        self.shapes_ = layer_shapes(model)
        self.params_after_ = n_params(model)
        return model

    def _channels(self, model: nn.Module, ctx: CompressContext) -> nn.Module:
        import torch
        import torch_pruning as tp
        from torch import nn

        p = self.params
        device = next(model.parameters()).device
        example = ctx.example_inputs.to(device)
        heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == ctx.spec.n_outputs]
        imp = tp.importance.TaylorImportance() if p.importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=p.ratio,
                                      iterative_steps=p.steps, ignored_layers=heads[-1:])
        loss_fn = torch.nn.functional.cross_entropy if ctx.spec.task == "classification" else torch.nn.functional.mse_loss
        for _ in range(p.steps):
            if p.importance == "taylor":  # Taylor scores read the gradients of a few training batches
                model.zero_grad()
                for x, y in ctx.batches(p.taylor_batches):
                    out = model(x.to(device))
                    loss_fn(out if ctx.spec.task == "classification" else out.squeeze(-1), y.to(device)).backward()
            pruner.step()
            model.zero_grad(set_to_none=True)
            if p.epochs:
                model = ctx.fit(model, p.epochs)
        return model

    def _layers(self, model: nn.Module, ctx: CompressContext) -> nn.Module:
        import torch
        from torch import nn

        metric = _score_metric(ctx)
        base = ctx.evaluate(model)[metric]
        candidates = _shape_preserving_blocks(model, ctx.example_inputs)
        drops = {}
        for name in candidates:  # the score lost when this block alone is skipped
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            block = getattr(holder, child)
            setattr(holder, child, nn.Identity())
            drops[name] = base - ctx.evaluate(model)[metric]
            setattr(holder, child, block)
        n = math.ceil(self.params.ratio * len(candidates) - 1e-9)
        self.removed_ = sorted(sorted(drops, key=drops.get)[:n])
        for name in self.removed_:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
        if self.params.epochs and self.removed_:
            with torch.enable_grad():
                model = ctx.fit(model, self.params.epochs)
        return model

    def report(self) -> dict[str, Any]:
        return {"params_before": self.params_before_, "params_after": self.params_after_,
                "removed_blocks": self.removed_, "granularity": self.params.granularity}


def _score_metric(ctx: CompressContext) -> str:
    return "val_accuracy" if ctx.spec.task == "classification" else "val_r2"


def _shape_preserving_blocks(model: nn.Module, example: Any) -> list[str]:
    """Modules with weights whose output has their input's shape (skippable), outermost first;
    single normalisation layers are not blocks."""
    import torch
    from torch import nn

    shapes: dict[str, bool] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name or isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            continue
        if not any(True for _ in m.parameters()):
            continue
        def record(mod, inp, out, name=name):  # noqa: ANN001
            shapes[name] = bool(inp) and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor) \
                and inp[0].shape == out.shape
        hooks.append(m.register_forward_hook(record))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(example.to(next(model.parameters()).device))
    model.train(was)
    for h in hooks:
        h.remove()
    found: list[str] = []
    for name, ok in shapes.items():
        if ok and not any(name.startswith(f + ".") for f in found):
            found.append(name)
    return found
