"""``gru`` and ``tcn``: models for a series array column (N x C x T; N x T is one channel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from forgeline.core import DataSpec, InputError, Modality, Params

from .encoding import ArrayEncoder, EncodedModel, lazy_torch_classes

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def _define() -> dict[str, type]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class GRUNet(nn.Module):
        """A (bi)directional GRU over time; the last layer's final hidden states feed a Linear head."""

        def __init__(self, in_channels: int, n_outputs: int, hidden: int, layers: int, bidirectional: bool,
                     dropout: float) -> None:
            super().__init__()
            self.directions = 2 if bidirectional else 1
            self.gru = nn.GRU(in_channels, hidden, num_layers=layers, batch_first=True,
                              bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden * self.directions, n_outputs))

        def forward(self, x):  # noqa: ANN001, ANN201
            _, h_n = self.gru(x.transpose(1, 2))  # N x C x T -> N x T x C
            last = torch.cat(list(h_n[-self.directions:]), dim=1)  # last layer, every direction
            return self.head(last)

    class CausalConv1d(nn.Conv1d):
        """A dilated Conv1d padded on the left only, so output t sees inputs <= t."""

        def forward(self, x):  # noqa: ANN001, ANN201
            return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))

    class TemporalBlock(nn.Module):
        """Two dilated causal convs with ReLU and dropout, plus a residual (1x1 conv when widths differ)."""

        def __init__(self, width_in: int, width_out: int, kernel_size: int, dilation: int, dropout: float) -> None:
            super().__init__()
            self.body = nn.Sequential(
                CausalConv1d(width_in, width_out, kernel_size, dilation=dilation), nn.ReLU(), nn.Dropout(dropout),
                CausalConv1d(width_out, width_out, kernel_size, dilation=dilation), nn.ReLU(), nn.Dropout(dropout))
            self.residual = nn.Conv1d(width_in, width_out, 1) if width_in != width_out else nn.Identity()

        def forward(self, x):  # noqa: ANN001, ANN201
            return F.relu(self.body(x) + self.residual(x))

    class TCNNet(nn.Module):
        """Temporal blocks with dilations 1, 2, 4, ...; pooled over time (mean or last step), Linear head."""

        def __init__(self, in_channels: int, n_outputs: int, channels: list[int], kernel_size: int,
                     dropout: float, pooling: str) -> None:
            super().__init__()
            blocks, width = [], in_channels
            for level, out in enumerate(channels):
                blocks.append(TemporalBlock(width, out, kernel_size, 2 ** level, dropout))
                width = out
            self.blocks = nn.Sequential(*blocks)
            self.pooling = pooling
            self.head = nn.Linear(width, n_outputs)

        def forward(self, x):  # noqa: ANN001, ANN201
            h = self.blocks(x)
            return self.head(h.mean(dim=2) if self.pooling == "mean" else h[:, :, -1])

    return {"GRUNet": GRUNet, "CausalConv1d": CausalConv1d, "TemporalBlock": TemporalBlock, "TCNNet": TCNNet}


__getattr__ = lazy_torch_classes(__name__, {"GRUNet", "CausalConv1d", "TemporalBlock", "TCNNet"}, _define)


class SeriesParams(Params):
    column: str | None = Field(None, description="the series column (None: the table's only series feature column)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout (between GRU layers and before the head; "
                           "inside each TCN block)")
    standardize: bool = Field(True, description="standardize each channel with its training mean and std")


class _SeriesModel(EncodedModel):
    modalities = frozenset({Modality.SERIES})
    input_modality = Modality.SERIES

    def make_encoder(self) -> ArrayEncoder:
        return ArrayEncoder(self.name, Modality.SERIES, self.params.column, self.params.standardize)

    def _channels(self, spec: DataSpec) -> int:
        if len(spec.input_shape) != 2:
            raise InputError(f"{self.name}: inputs must be N x C x T, got samples of shape {spec.input_shape}")
        return spec.input_shape[0]


class GRU(_SeriesModel):
    """GRU recurrent network for time series, classifying or regressing from its final states.

    Inputs: float32 N x C x T from the series array column (channels standardized on the
    training split unless ``standardize: false``). The module maps N x C x T to N x n_outputs.
    """

    name = "gru"

    class Params(SeriesParams):
        hidden: int = Field(64, ge=1, description="hidden units per GRU layer and direction")
        layers: int = Field(1, ge=1, description="stacked GRU layers")
        bidirectional: bool = Field(False, description="also read each series backwards")

    def build_module(self, spec: DataSpec) -> nn.Module:
        p = self.params
        return __getattr__("GRUNet")(self._channels(spec), spec.n_outputs, p.hidden, p.layers, p.bidirectional,
                                     p.dropout)


class TCN(_SeriesModel):
    """Temporal convolutional network for time series: dilated causal conv blocks with residuals.

    Inputs: float32 N x C x T as for ``gru``. Block i has dilation 2^i; the receptive field is
    1 + 2 (kernel_size - 1) (2^blocks - 1) steps. The module maps N x C x T to N x n_outputs.
    """

    name = "tcn"

    class Params(SeriesParams):
        channels: list[PositiveInt] = Field([32, 32, 32, 32], min_length=1,
                                            description="width of each temporal block (block i has dilation 2^i)")
        kernel_size: int = Field(3, ge=2, description="causal conv kernel size")
        pooling: Literal["mean", "last"] = Field("mean", description="summary of the last block over time: "
                                                  "mean over all steps, or the last step")

    def build_module(self, spec: DataSpec) -> nn.Module:
        p = self.params
        return __getattr__("TCNNet")(self._channels(spec), spec.n_outputs, list(p.channels), p.kernel_size,
                                     p.dropout, p.pooling)
