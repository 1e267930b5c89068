"""Table -> tensor encodings shared by the built-in models, and their common base class.

Each encoder learns what it needs on the training split (``fit``), then turns any split into
one numpy array with one row per table row (``transform``); :class:`EncodedModel` wraps an
encoder into ``Model.fit_inputs`` / ``Model.inputs``. Encoders hold only small fitted state
(levels, medians, channel statistics, a vocabulary), saved with the run as data
(:meth:`EncodedModel.state`) and small.

Also here: :func:`lazy_torch_classes`, which lets the model modules define their
``nn.Module`` classes without importing torch when the plugin is merely listed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import numpy as np

from forgeline.core import DataSpec, InputError, Modality, Model, Table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch


class TabularEncoder:
    """Numeric columns as float32 (NaN -> training median) + one-hot categorical columns.

    Levels come from the training split, the ``max_levels`` most frequent per column; a
    level not kept (unseen, rare or missing) encodes as all zeros. No scaling: cleaning
    stages (``robust-scale``) do that. Feature columns of other modalities (text, datetime,
    arrays) are left out when ``other_columns="drop"`` (listed in :attr:`dropped`) or rejected.
    """

    def __init__(self, owner: str, max_levels: int = 100, other_columns: str = "drop") -> None:
        self.owner = owner
        self.max_levels = max_levels
        self.other_columns = other_columns

    def fit(self, table: Table) -> TabularEncoder:
        schema = table.schema
        self.numeric = [c for c in schema.features(Modality.NUMERIC) if c in table.frame.columns]
        self.categorical = [c for c in schema.features(Modality.CATEGORICAL) if c in table.frame.columns]
        self.dropped = [c for c in schema.features() if c not in self.numeric and c not in self.categorical]
        if self.dropped and self.other_columns == "error":
            raise InputError(f"{self.owner}: feature columns {self.dropped} are neither numeric nor categorical; "
                             f"drop them, give them another role, or set other_columns: drop")
        if not self.numeric and not self.categorical:
            raise InputError(f"{self.owner}: the table has no numeric or categorical feature columns "
                             f"(features: {schema.features() or 'none'}); use a model for its modality")
        numbers = self._numbers(table.frame)
        medians = numbers.median(skipna=True)
        empty = medians.index[medians.isna()].tolist()
        if empty:
            raise InputError(f"{self.owner}: numeric columns {empty} have no values in the training split; "
                             f"drop them or impute them first")
        self.medians = medians.to_numpy(np.float64)
        self.levels: dict[str, list[Any]] = {}
        for col in self.categorical:
            counts = table.frame[col].value_counts(dropna=True)
            kept = counts.iloc[:self.max_levels].index.tolist()  # most frequent first
            self.levels[col] = _sorted_levels(kept)
        self.feature_names = tuple(self.numeric) + tuple(
            f"{col}={level}" for col in self.categorical for level in self.levels[col])
        return self

    def _numbers(self, frame: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        bad = [c for c in self.numeric if not (pd.api.types.is_numeric_dtype(frame[c])
                                               or pd.api.types.is_bool_dtype(frame[c]))]
        if bad:
            raise InputError(f"{self.owner}: numeric columns {bad} hold non-numeric values "
                             f"(dtypes {[str(frame[c].dtype) for c in bad]}); mark them categorical or convert them")
        return frame[self.numeric].astype(np.float64)

    def transform(self, table: Table) -> np.ndarray:
        import pandas as pd

        missing = [c for c in self.numeric + self.categorical if c not in table.frame.columns]
        if missing:
            raise InputError(f"{self.owner}: columns {missing} were in the training split but are missing here")
        numbers = self._numbers(table.frame).to_numpy(np.float64)
        infinite = np.isinf(numbers).any(axis=0)
        if infinite.any():
            columns = [c for c, bad in zip(self.numeric, infinite, strict=True) if bad]
            raise InputError(f"{self.owner}: numeric columns {columns} hold infinite values; "
                             f"clip or drop them first (e.g. sigma-outliers)")
        numbers = np.where(np.isnan(numbers), self.medians, numbers)
        blocks = [numbers.astype(np.float32)]
        for col in self.categorical:
            levels = self.levels[col]
            # codes are -1 for a value not among the kept levels (unseen, rare, missing)
            codes = pd.Index(levels).get_indexer(table.frame[col].to_numpy(dtype=object))
            onehot = np.zeros((len(codes), len(levels)), dtype=np.float32)
            known = codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(onehot)
        return np.ascontiguousarray(np.concatenate(blocks, axis=1))

    def spec_extra(self) -> dict[str, Any]:
        return {"numeric": list(self.numeric), "categorical": {c: list(map(str, v)) for c, v in self.levels.items()}}


def _sorted_levels(levels: list[Any]) -> list[Any]:
    try:
        return sorted(levels)
    except TypeError:  # mixed types (e.g. 1 and "a"): a stable, deterministic order anyway
        return sorted(levels, key=repr)


def pick_column(owner: str, table: Table, modality: Modality, column: str | None) -> str:
    """The one feature column of ``modality`` a single-input model reads (or the named one)."""
    candidates = table.schema.features(modality)
    if column is not None:
        if column not in table.schema:
            raise InputError(f"{owner}: column {column!r} is not in the table (its {modality} features: "
                             f"{candidates or 'none'})")
        if table.schema[column].modality != modality:
            raise InputError(f"{owner}: column {column!r} is {table.schema[column].modality}, expected {modality}")
        return column
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(f"{owner}: the table has no {modality} feature column "
                         f"(it has {sorted(map(str, table.schema.modalities)) or 'no features'})")
    raise InputError(f"{owner}: several {modality} feature columns {candidates}; "
                     f"choose one with the `column` parameter")


class ArrayEncoder:
    """An image (N x C x H x W) or series (N x C x T; N x T = one channel) array as float32.

    With ``standardize``, each channel is shifted and scaled by its training mean and standard
    deviation (array columns are not touched by the table cleaners, so the model does it).
    """

    NDIM: ClassVar[dict[Modality, int]] = {Modality.IMAGE: 4, Modality.SERIES: 3}

    def __init__(self, owner: str, modality: Modality, column: str | None = None, standardize: bool = True) -> None:
        self.owner, self.modality, self.column, self.standardize = owner, modality, column, standardize

    def fit(self, table: Table) -> ArrayEncoder:
        self.column_ = pick_column(self.owner, table, self.modality, self.column)
        arr = self._array(table)
        self.sample_shape = tuple(arr.shape[1:])
        reduce_axes = (0, *range(2, arr.ndim))
        if self.standardize:
            self.mean = arr.mean(axis=reduce_axes, dtype=np.float64)
            std = arr.std(axis=reduce_axes, dtype=np.float64)
            self.std = np.where(std > 0, std, 1.0)  # a constant channel stays constant, not NaN
        self.feature_names = (self.column_,)
        return self

    def _array(self, table: Table) -> np.ndarray:
        name = self.column_
        if name not in table.arrays:
            raise InputError(f"{self.owner}: array column {name!r} is missing "
                             f"(arrays: {sorted(table.arrays) or 'none'})")
        arr = table.arrays[name]
        if self.modality == Modality.SERIES and arr.ndim == 2:
            arr = arr[:, None, :]
        want = self.NDIM[self.modality]
        if arr.ndim != want:
            layout = "N x C x H x W" if self.modality == Modality.IMAGE else "N x C x T (or N x T)"
            raise InputError(f"{self.owner}: {self.modality} column {name!r} has shape {arr.shape}; expected {layout}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise InputError(f"{self.owner}: {self.modality} column {name!r} has dtype {arr.dtype}; "
                             f"expected real numbers")
        if np.issubdtype(arr.dtype, np.floating):
            bad = int(np.isnan(arr).reshape(len(arr), -1).any(axis=1).sum())
            if bad:
                raise InputError(f"{self.owner}: {self.modality} column {name!r} has NaN values in {bad} rows; "
                                 f"clean or drop them first")
        return arr

    def transform(self, table: Table) -> np.ndarray:
        arr = self._array(table)
        if tuple(arr.shape[1:]) != self.sample_shape:
            raise InputError(f"{self.owner}: {self.modality} column {self.column_!r} has samples of shape "
                             f"{tuple(arr.shape[1:])}; the training split had {self.sample_shape}")
        if not self.standardize:  # a copy: the tensor must not alias (and let a batch op change) the table
            return np.array(arr, dtype=np.float32, order="C", copy=True)
        shape = (1, -1) + (1,) * (arr.ndim - 2)
        return np.ascontiguousarray(((arr - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32))

    def spec_extra(self) -> dict[str, Any]:
        return {"column": self.column_}


#: lower-case word tokens (one-letter words included, unlike scikit-learn's default pattern)
TOKEN_PATTERN = r"(?u)\b\w+\b"
PAD_ID, UNKNOWN_ID = 0, 1


class TextEncoder:
    """A text column as padded int64 token ids (N x L; 0 = padding, 1 = unknown word).

    The vocabulary is learned on the training split with scikit-learn's ``CountVectorizer``
    (lower-cased word tokens, the ``max_vocab`` most frequent words appearing in at least
    ``min_freq`` texts); known words get ids 2, 3, ... L is the longest training text in tokens,
    capped by ``max_len``; longer texts are truncated. A missing text is all padding.
    """

    def __init__(self, owner: str, column: str | None = None, max_vocab: int = 20000, min_freq: int = 1,
                 max_len: int = 256) -> None:
        self.owner, self.column, self.max_len = owner, column, max_len
        self.max_vocab, self.min_freq = max_vocab, min_freq

    @staticmethod
    def analyzer() -> Callable[[str], list[str]]:
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN).build_analyzer()

    def fit(self, table: Table) -> TextEncoder:
        from sklearn.feature_extraction.text import CountVectorizer

        self.column_ = pick_column(self.owner, table, Modality.TEXT, self.column)
        texts = self._texts(table)
        vectorizer = CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, min_df=self.min_freq,
                                     max_features=self.max_vocab)
        try:
            vectorizer.fit(texts)
        except ValueError as e:  # empty vocabulary: no words, or none frequent enough
            raise InputError(f"{self.owner}: no vocabulary from text column {self.column_!r} "
                             f"(min_freq={self.min_freq}): {e}") from None
        words = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
        self.vocabulary = {word: i + 2 for i, word in enumerate(words)}
        longest = max((len(t) for t in self._tokens(texts)), default=1)
        self.seq_len = max(1, min(self.max_len, longest))
        self.feature_names = (self.column_,)
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 2

    def _texts(self, table: Table) -> list[str]:
        if self.column_ not in table.frame.columns:
            raise InputError(f"{self.owner}: text column {self.column_!r} is missing from the table")
        col = table.frame[self.column_]
        return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in col.tolist()]

    def _tokens(self, texts: Iterable[str]) -> Iterable[list[str]]:
        analyze = self.analyzer()
        return (analyze(t) for t in texts)

    def transform(self, table: Table) -> np.ndarray:
        ids = np.zeros((len(table), self.seq_len), dtype=np.int64)
        vocab = self.vocabulary
        for row, tokens in enumerate(self._tokens(self._texts(table))):
            row_ids = [vocab.get(tok, UNKNOWN_ID) for tok in tokens[:self.seq_len]]
            ids[row, :len(row_ids)] = row_ids
        return ids

    def spec_extra(self) -> dict[str, Any]:
        return {"column": self.column_, "vocab_size": self.vocab_size, "padding_idx": PAD_ID,
                "unknown_idx": UNKNOWN_ID}


Encoder = TabularEncoder | ArrayEncoder | TextEncoder


class EncodedModel(Model):
    """Base of the built-in models: ``fit_inputs``/``inputs`` through an encoder.

    Subclasses implement :meth:`make_encoder` and :meth:`build_module`; :meth:`build` hands
    ``build_module`` the loop's :class:`DataSpec` completed with what the encoder learned:
    ``feature_names`` of the encoded tensor (e.g. ``colour=red`` for a one-hot column, where
    the loop knows only the table's columns), ``modality``, and ``extra`` such as ``vocab_size``.
    """

    #: the modality of the tensor this model's module takes
    input_modality: ClassVar[Modality] = Modality.NUMERIC

    def make_encoder(self) -> Encoder:
        raise NotImplementedError

    def fit_inputs(self, table: Table) -> None:
        self.encoder = self.make_encoder().fit(table)

    def state(self) -> dict[str, Any]:
        """The fitted encoding as data (levels, medians, vocabulary...): the attributes ``fit`` set."""
        state = super().state()
        encoder = getattr(self, "encoder", None)
        if encoder is not None:
            unfitted = vars(self.make_encoder())
            state["encoder"] = {k: v for k, v in vars(encoder).items() if k not in unfitted}
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        fitted = state.pop("encoder", None)
        super().load_state(state)
        if fitted is not None:
            encoder = self.make_encoder()
            for key, value in fitted.items():
                if not isinstance(key, str) or key.startswith("_") or key in vars(encoder):
                    raise ValueError(f"{self.name}: {key!r} is not a fitted attribute of its encoder")
                setattr(encoder, key, value)
            self.encoder = encoder

    def _fitted(self) -> Encoder:
        encoder = getattr(self, "encoder", None)
        if encoder is None:
            raise RuntimeError(f"{self.name}: call fit_inputs(train) before inputs() or build()")
        return encoder

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self._fitted().feature_names)

    def inputs(self, table: Table) -> torch.Tensor:
        import torch

        return torch.from_numpy(self._fitted().transform(table))

    def complete_spec(self, spec: DataSpec) -> DataSpec:
        """``spec`` with the encoder's feature names, modality and extras (the loop's extras win)."""
        from dataclasses import replace

        encoder = self._fitted()
        return replace(spec, feature_names=tuple(encoder.feature_names),
                       modality=self.input_modality, extra={**encoder.spec_extra(), **dict(spec.extra)})

    def build(self, spec: DataSpec) -> torch.nn.Module:
        return self.build_module(self.complete_spec(spec))

    def build_module(self, spec: DataSpec) -> torch.nn.Module:
        raise NotImplementedError


def lazy_torch_classes(module_name: str, names: set[str],
                       define: Callable[[], dict[str, type]]) -> Callable[[str], type]:
    """A module ``__getattr__`` (PEP 562) that defines ``nn.Module`` classes on first access.

    Plugin modules must not import torch at import time (listing plugins stays fast), but the
    modules a model builds must be instances of importable classes so that a saved model
    pickles. ``define()`` imports torch and returns the classes named ``names``; they are
    renamed to live at the module's top level and stored there, so pickle finds them by
    ``module.ClassName``. Other missing attributes raise AttributeError without importing torch.
    """
    import sys
    import threading

    lock = threading.Lock()  # two threads building their first model must not define the classes twice

    def __getattr__(name: str) -> type:
        module = sys.modules[module_name]
        if name not in names:
            return _lookup(module, name)
        with lock:
            if "_torch_classes_defined" in vars(module):
                return _lookup(module, name)
            classes = define()
            if set(classes) != names:
                raise RuntimeError(f"{module_name}: define() gave {sorted(classes)}, expected {sorted(names)}")
            for cls_name, cls in classes.items():
                if cls_name in vars(module):
                    raise RuntimeError(f"{module_name}.{cls_name} is already defined; rename the torch class")
                cls.__module__, cls.__qualname__ = module_name, cls_name
                setattr(module, cls_name, cls)
            module._torch_classes_defined = True
            return _lookup(module, name)

    return __getattr__


def _lookup(module: Any, name: str) -> type:
    try:
        return vars(module)[name]
    except KeyError:
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None
