"""``cnn``: a small convolutional network for an image array column (N x C x H x W)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, PositiveInt

from forgeline.core import DataSpec, InputError, Modality, Params

from .encoding import ArrayEncoder, EncodedModel, lazy_torch_classes

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def _define() -> dict[str, type]:
    from torch import nn

    class ConvNet(nn.Module):
        """Conv blocks (conv-BN-ReLU, then 2x2 max-pool while the map is >= 2 pixels),
        global average pooling, dropout and a Linear head."""

        def __init__(self, in_channels: int, spatial: tuple[int, int], n_outputs: int, channels: list[int],
                     convs_per_block: int, kernel_size: int, dropout: float) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width, (h, w) = in_channels, spatial
            for out in channels:
                for _ in range(convs_per_block):
                    layers += [nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=False),
                               nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                    width = out
                if min(h, w) >= 2:  # pooling a 1-pixel map would make it empty
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, n_outputs))

        def forward(self, x):  # noqa: ANN001, ANN201 - torch types only exist once torch is imported
            return self.head(self.pool(self.features(x)))

    return {"ConvNet": ConvNet}


__getattr__ = lazy_torch_classes(__name__, {"ConvNet"}, _define)


class CNN(EncodedModel):
    """Small convolutional network for images: conv blocks, global pooling, a linear head.

    Inputs: float32 N x C x H x W from the image array column (each channel standardized by
    its training mean and std unless ``standardize: false``). Other feature columns are not
    used. The module maps N x C x H x W to N x n_outputs.
    """

    name = "cnn"
    modalities = frozenset({Modality.IMAGE})
    input_modality = Modality.IMAGE

    class Params(Params):
        column: str | None = Field(None, description="the image column (None: the table's only image feature column)")
        channels: list[PositiveInt] = Field([32, 64, 128], min_length=1,
                                            description="output channels of each conv block, in order")
        convs_per_block: int = Field(1, ge=1, description="conv-BN-ReLU layers per block "
                                     "(each block then halves H and W)")
        kernel_size: int = Field(3, ge=1, description="conv kernel size (odd sizes keep H and W)")
        dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the linear head")
        standardize: bool = Field(True, description="standardize each channel with its training mean and std")

    def make_encoder(self) -> ArrayEncoder:
        return ArrayEncoder(self.name, Modality.IMAGE, self.params.column, self.params.standardize)

    def build_module(self, spec: DataSpec) -> nn.Module:
        if len(spec.input_shape) != 3:
            raise InputError(f"cnn: inputs must be N x C x H x W, got samples of shape {spec.input_shape}")
        c, h, w = spec.input_shape
        p = self.params
        return __getattr__("ConvNet")(c, (h, w), spec.n_outputs, list(p.channels), p.convs_per_block,
                                      p.kernel_size, p.dropout)
