"""``module``: a user's own ``nn.Module`` factory, named ``"package.module:callable"``.

Call convention: ``factory(spec, **kwargs) -> torch.nn.Module``, where ``spec`` is the
:class:`forgeline.core.DataSpec` of the training split (``input_shape`` is one sample's
shape, ``n_outputs`` the classes or 1, ``extra`` holds e.g. ``vocab_size`` for text) and
``kwargs`` are the ``kwargs`` parameter. The module must map a batch of inputs (as encoded by
the ``inputs`` parameter: same as ``mlp``, ``cnn``, ``gru``/``tcn`` or ``text-classifier``
with their default settings) to N x n_outputs. The factory is imported with importlib at
build time, never evaluated as code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from forgeline.core import DataSpec, InputError, Modality, Params

from .encoding import ArrayEncoder, EncodedModel, Encoder, TabularEncoder, TextEncoder

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: dotted module path, a colon, then an attribute path (like entry-point object references)
FACTORY_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"

_INPUT_MODALITY = {"table": Modality.NUMERIC, "image": Modality.IMAGE, "series": Modality.SERIES,
                   "text": Modality.TEXT}


def load_factory(ref: str, owner: str = "module") -> Any:
    """The object ``ref`` (``"package.module:attr.path"``) names, imported with importlib."""
    module_name, _, attr_path = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"{owner}: factory {ref!r}: cannot import {module_name!r} ({e}); "
                         f"is the package installed or on sys.path?") from None
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise InputError(f"{owner}: factory {ref!r}: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise InputError(f"{owner}: factory {ref!r} is a {type(obj).__name__}, not a callable")
    return obj


class CustomModule(EncodedModel):
    """Your own nn.Module: `factory: "pkg.mod:make"` is called as make(spec, **kwargs).

    Inputs are encoded as the built-in model for ``inputs`` does it (``table``: as ``mlp``;
    ``image``: as ``cnn``; ``series``: as ``gru``; ``text``: as ``text-classifier``), each with
    its default settings.
    """

    name = "module"
    modalities = frozenset()  # whatever the chosen `inputs` encoding reads; checked at fit_inputs

    class Params(Params):
        factory: str = Field(description='the factory as "package.module:callable"; called as '
                             "factory(spec: DataSpec, **kwargs) and must return a torch.nn.Module",
                             pattern=FACTORY_PATTERN)
        kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments passed to the factory")
        inputs: Literal["table", "image", "series", "text"] = Field(
            "table", description="how the table becomes the module's input tensor: table (numeric + one-hot "
            "float32 N x F), image (float32 N x C x H x W), series (float32 N x C x T), text (int64 N x L ids)")

    @property
    def input_modality(self) -> Modality:  # type: ignore[override]  # depends on the `inputs` parameter
        return _INPUT_MODALITY[self.params.inputs]

    def make_encoder(self) -> Encoder:
        kind = self.params.inputs
        if kind == "table":
            return TabularEncoder(self.name)
        if kind == "text":
            return TextEncoder(self.name)
        return ArrayEncoder(self.name, _INPUT_MODALITY[kind])

    def build_module(self, spec: DataSpec) -> nn.Module:
        from torch import nn

        factory = load_factory(self.params.factory, self.name)
        module = factory(spec, **self.params.kwargs)
        if not isinstance(module, nn.Module):
            raise InputError(f"module: factory {self.params.factory!r} returned a {type(module).__name__}, "
                             f"expected a torch.nn.Module")
        return module
