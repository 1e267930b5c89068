"""``text-classifier``: mean of word embeddings (``nn.EmbeddingBag``) and an MLP head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, PositiveInt

from forgeline.core import DataSpec, InputError, Modality

from .encoding import PAD_ID, EncodedModel, TextEncoder, lazy_torch_classes
from .mlp import HeadParams, build_mlp

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


def _define() -> dict[str, type]:
    from torch import nn

    class TextNet(nn.Module):
        """EmbeddingBag (mean, padding excluded) over N x L token ids, then an MLP head."""

        def __init__(self, vocab_size: int, embed_dim: int, head: nn.Module) -> None:
            super().__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=PAD_ID)
            self.head = head

        def forward(self, ids):  # noqa: ANN001, ANN201
            return self.head(self.embedding(ids))

    return {"TextNet": TextNet}


__getattr__ = lazy_torch_classes(__name__, {"TextNet"}, _define)


class TextClassifier(EncodedModel):
    """Text model: a vocabulary learned on the training split, mean word embeddings, MLP head.

    Inputs: int64 N x L token ids, padded with 0 (unknown words are 1; L = the longest
    training text in tokens, capped by ``max_len``). The module maps N x L to N x n_outputs;
    it needs ``vocab_size`` (from ``fit_inputs``, also given in ``DataSpec.extra``).
    Other feature columns are not used.
    """

    name = "text-classifier"
    modalities = frozenset({Modality.TEXT})
    input_modality = Modality.TEXT

    class Params(HeadParams):
        hidden: list[PositiveInt] = Field([64], description="widths of the head's hidden layers (empty: linear head)")
        column: str | None = Field(None, description="the text column (None: the table's only text feature column)")
        max_vocab: int = Field(20000, ge=1, description="most frequent training words kept; others map to "
                               "the unknown id")
        min_freq: int = Field(1, ge=1, description="a word joins the vocabulary when at least this many "
                              "training texts contain it")
        max_len: int = Field(256, ge=1, description="tokens kept per text (longer texts are truncated)")
        embed_dim: int = Field(64, ge=1, description="word embedding size")

    def make_encoder(self) -> TextEncoder:
        p = self.params
        return TextEncoder(self.name, p.column, p.max_vocab, p.min_freq, p.max_len)

    def build_module(self, spec: DataSpec) -> nn.Module:
        if len(spec.input_shape) != 1:
            raise InputError(f"text-classifier: inputs must be N x L token ids, "
                             f"got samples of shape {spec.input_shape}")
        vocab_size = int(spec.extra["vocab_size"])
        head = build_mlp(self.params.embed_dim, spec.n_outputs, self.params)
        return __getattr__("TextNet")(vocab_size, self.params.embed_dim, head)
