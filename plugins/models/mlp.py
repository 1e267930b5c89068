"""``mlp``: a multi-layer perceptron over a table's numeric and one-hot categorical columns.

The module is an ``nn.Sequential`` of Linear / (BatchNorm) / activation / (Dropout) blocks
ending in a Linear output head, with ``parallelize_plan(tp_mesh)`` for tensor parallelism.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from forgeline.core import DataSpec, InputError, Modality, Params

from .encoding import EncodedModel, TabularEncoder, lazy_torch_classes

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

Activation = Literal["relu", "gelu", "silu"]


class HeadParams(Params):
    """Parameters of a stack of fully connected layers (the mlp, or a head on an encoder)."""

    hidden: list[PositiveInt] = Field([256, 128], description="widths of the hidden layers, in order "
                              "(empty: a linear model)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden activation (0 = none)")
    activation: Activation = Field("relu", description="activation after each hidden layer: relu, gelu or silu")
    batch_norm: bool = Field(False, description="BatchNorm1d after each hidden Linear (disables tensor parallelism)")


def _define() -> dict[str, type]:
    from torch import nn

    class MLPNet(nn.Sequential):
        """Linear / (BatchNorm1d) / activation / (Dropout) blocks, then a Linear output head."""

        def parallelize_plan(self, tp_mesh: object) -> dict[str, object]:
            """A ``parallelize_module`` plan for the ``hybrid`` strategy's tensor-parallel mesh.

            Consecutive hidden Linear layers are paired (Megatron style): the first of a pair
            is ``ColwiseParallel`` (output features sharded), the second ``RowwiseParallel``
            (input features sharded, outputs summed), so activations between them stay
            sharded and only one all-reduce runs per pair. An unpaired hidden layer and the
            output head stay replicated.
            """
            from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

            if any(isinstance(m, nn.BatchNorm1d) for m in self):
                raise InputError("mlp: batch_norm=True cannot be tensor-parallel (BatchNorm1d would see "
                                 "sharded features); set batch_norm: false for the hybrid strategy")
            hidden = [name for name, m in self.named_children() if isinstance(m, nn.Linear)][:-1]
            plan: dict[str, object] = {}
            for first, second in zip(hidden[0::2], hidden[1::2], strict=False):
                plan[first], plan[second] = ColwiseParallel(), RowwiseParallel()
            return plan

    return {"MLPNet": MLPNet}


__getattr__ = lazy_torch_classes(__name__, {"MLPNet"}, _define)


def mlp_layers(in_features: int, n_outputs: int, params: HeadParams) -> list[nn.Module]:
    """The layers of an :class:`MLPNet` from ``in_features`` to ``n_outputs``."""
    from torch import nn

    act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}[params.activation]
    layers: list[nn.Module] = []
    width = in_features
    for out in params.hidden:
        layers.append(nn.Linear(width, out))
        if params.batch_norm:
            layers.append(nn.BatchNorm1d(out))
        layers.append(act())
        if params.dropout > 0:
            layers.append(nn.Dropout(params.dropout))
        width = out
    layers.append(nn.Linear(width, n_outputs))
    return layers


def build_mlp(in_features: int, n_outputs: int, params: HeadParams) -> nn.Module:
    return __getattr__("MLPNet")(*mlp_layers(in_features, n_outputs, params))


class MLP(EncodedModel):
    """Multi-layer perceptron for tables: numeric columns plus one-hot categorical columns.

    Inputs: float32 N x F — numeric features (NaN filled with the training median, no other
    scaling) followed by one-hot categoricals (levels from the training split; unknown -> all
    zeros). The module maps N x F to N x n_outputs logits or values.
    """

    name = "mlp"
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL})
    input_modality = Modality.NUMERIC

    class Params(HeadParams):
        max_levels: int = Field(100, ge=1, description="most frequent levels one-hot encoded per categorical "
                                "column; rarer or unseen levels encode as all zeros")
        other_columns: Literal["drop", "error"] = Field(
            "drop", description="feature columns that are neither numeric nor categorical (text, datetime, "
            "arrays): drop = leave them out of the inputs (listed in the model's `dropped_columns`), "
            "error = reject the table")

    def make_encoder(self) -> TabularEncoder:
        return TabularEncoder(self.name, self.params.max_levels, self.params.other_columns)

    @property
    def dropped_columns(self) -> list[str]:
        return list(self._fitted().dropped)

    def build_module(self, spec: DataSpec) -> nn.Module:
        if len(spec.input_shape) != 1:
            raise InputError(f"mlp: inputs must be N x F, got samples of shape {spec.input_shape}")
        return build_mlp(spec.input_shape[0], spec.n_outputs, self.params)
