"""``text-eda``: Easy Data Augmentation of text columns, on nlpaug's word and sentence augmenters.

Each operation (synonym replacement, random insertion of a synonym, random swap, random
deletion, sentence shuffle) runs on a document with its own probability, in that order;
``words`` is the share of a document's words one operation touches (EDA's alpha). Synonyms
come from WordNet read offline (``_thesaurus``): nlpaug's ``SynonymAug`` would download
WordNet and a POS tagger, so its word augmenters are driven with that thesaurus instead.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator, Mapping

import numpy as np
from pydantic import Field, model_validator

from forgeline.core import Modality

from ._rows import RowAugmenter, RowParams, seeds
from ._thesaurus import WordNetThesaurus, find_wordnet

OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion", "sentence_shuffle")
#: probability of each word operation when the user names none (EDA's four operations)
DEFAULT_PROBABILITY = 0.5


class TextEdaParams(RowParams):
    synonym_replacement: float = Field(0.0, ge=0, le=1, description="probability of replacing words by WordNet synonyms")
    random_insertion: float = Field(0.0, ge=0, le=1, description="probability of inserting synonyms of words at "
                                    "random places")
    random_swap: float = Field(0.0, ge=0, le=1, description="probability of swapping random pairs of words")
    random_deletion: float = Field(0.0, ge=0, le=1, description="probability of deleting random words")
    sentence_shuffle: float = Field(0.0, ge=0, le=1, description="probability of shuffling the order of the sentences")
    words: float = Field(0.1, gt=0, le=1, description="share of a document's words one operation changes "
                         "(at least one)")
    wordnet: str | None = Field(None, description="a WordNet dict folder (default: the one "
                                "forgeline[augment] installs)")

    @model_validator(mode="after")
    def _check(self) -> TextEdaParams:
        if not any(op in self.model_fields_set for op in OPERATIONS):
            # nothing named: the four word operations of EDA, each on half the documents
            for op in OPERATIONS[:4]:
                object.__setattr__(self, op, DEFAULT_PROBABILITY)
        if self.synonym_replacement or self.random_insertion:
            _, problem = find_wordnet(self.wordnet)
            if problem:  # a missing thesaurus is a validation error, never a download
                raise ValueError(problem)
        return self


class TextEda(RowAugmenter):
    """Easy Data Augmentation of text: synonyms (WordNet), insertion, swap, deletion, sentence shuffle."""

    name = "text-eda"
    Params = TextEdaParams
    modalities = frozenset({Modality.TEXT})

    @classmethod
    def from_config(cls, section: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if section != "text_augmentation":
            return None
        fields = set(TextEdaParams.model_fields)
        return ({k: v for k, v in values.items() if k in fields},
                {k: v for k, v in values.items() if k not in fields})

    def _operations(self) -> list[tuple[float, Any]]:
        """(probability, nlpaug augmenter) of each operation in use, built once."""
        ops = getattr(self, "_ops", None)
        if ops is None:
            ops = self._ops = _build_operations(self.params)
        return ops

    def _augment_values(self, values: Any, rng: np.random.Generator) -> Any:
        import pandas as pd

        ops = self._operations()
        texts = values.astype("string").fillna("").tolist()
        chosen = rng.random((len(texts), len(ops))) < np.array([p for p, _ in ops])
        out = []
        with _seeded_globals(seeds(rng)[0]):  # nlpaug draws from random and numpy's global RNG
            for text, row in zip(texts, chosen):
                for use, (_, aug) in zip(row, ops):
                    if use and text.strip():
                        text = _first(aug.augment(text))
                out.append(text)
        return pd.Series(out, index=values.index, dtype=values.dtype if values.dtype != object else object)


def _first(result: Any) -> str:
    return result[0] if isinstance(result, list) else result


@contextlib.contextmanager
def _seeded_globals(seed: int) -> Iterator[None]:
    """Seed Python's and numpy's global RNGs for nlpaug, and put back what was there after."""
    state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def _build_operations(p: TextEdaParams) -> list[tuple[float, Any]]:
    from nlpaug.augmenter.sentence.random import RandomSentAug
    from nlpaug.augmenter.word.random import RandomWordAug
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    stopwords = sorted(ENGLISH_STOP_WORDS | {w.capitalize() for w in ENGLISH_STOP_WORDS})
    common = {"aug_p": p.words, "aug_min": 1, "aug_max": None}
    ops: list[tuple[float, Any]] = []
    if p.synonym_replacement or p.random_insertion:
        folder, problem = find_wordnet(p.wordnet)
        if problem:
            raise ValueError(problem)
        thesaurus = WordNetThesaurus(folder, ENGLISH_STOP_WORDS)
        substitute, insert = _synonym_augmenters()
        if p.synonym_replacement:
            ops.append((p.synonym_replacement, substitute(thesaurus, stopwords=stopwords, **common)))
        if p.random_insertion:
            ops.append((p.random_insertion, insert(thesaurus, stopwords=stopwords, **common)))
    if p.random_swap:
        ops.append((p.random_swap, RandomWordAug(action="swap", **common)))
    if p.random_deletion:
        ops.append((p.random_deletion, RandomWordAug(action="delete", **common)))
    if p.sentence_shuffle:
        # punkt with its default parameters splits sentences without the trained model nltk downloads
        ops.append((p.sentence_shuffle, RandomSentAug(mode="random", tokenizer=PunktSentenceTokenizer().tokenize,
                                                      **common)))
    return ops


def _synonym_augmenters() -> tuple[type, type]:
    """nlpaug's SynonymAug on a given thesaurus, and an insertion of synonyms on the same machinery."""
    from nlpaug.augmenter.word.synonym import SynonymAug
    from nlpaug.augmenter.word.word_augmenter import WordAugmenter
    from nlpaug.util import Action, PartOfSpeech

    class ThesaurusSynonymAug(SynonymAug):
        """SynonymAug with ``thesaurus`` as its model; SynonymAug's own __init__ would build
        nltk's WordNet, which downloads itself."""

        def __init__(self, thesaurus: WordNetThesaurus, action: str = Action.SUBSTITUTE, **kwargs: Any) -> None:
            WordAugmenter.__init__(self, action=action, name="Synonym_Aug", device="cpu", **kwargs)
            self.aug_src, self.model_path, self.lang, self.model = "wordnet", None, "eng", thesaurus

    class SynonymInsertAug(ThesaurusSynonymAug):
        """EDA's random insertion: a synonym of a random word, inserted at a random place
        (nlpaug inserts only through embedding models)."""

        def __init__(self, thesaurus: WordNetThesaurus, **kwargs: Any) -> None:
            super().__init__(thesaurus, action=Action.INSERT, **kwargs)

        def insert(self, data: str) -> str:
            tokens = self.tokenizer(data)
            tagged = self.model.pos_tag(tokens)
            picked = self._get_aug_idxes(tagged) or []
            for idx in picked:
                word, tag = tagged[idx]
                poses = PartOfSpeech.constituent2pos(tag) or [None]
                candidates = [c for pos in poses for c in self.model.predict(word, pos=pos)]
                if candidates:
                    synonym = self.sample(candidates, 1)[0].lower()
                    tokens.insert(random.randint(0, len(tokens)), synonym)
            return self.reverse_tokenizer(tokens)

    return ThesaurusSynonymAug, SynonymInsertAug
