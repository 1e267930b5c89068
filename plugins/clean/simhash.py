"""Vectorised 64-bit SimHash fingerprints and a block-permutation (pigeonhole) index.

Written by hand with numpy because no well-kept library does this vectorised: the SimHash
packages on PyPI hash one document at a time in Python (about 100x slower at a million
documents) and none ships the block-permutation index of Manku et al. (WWW 2007).

How it works:

* tokenise: the lowercased words (runs of word characters; punctuation and spacing do not
  count); features are word n-grams of ``1..ngram`` words, each hashed to 64 bits (pandas'
  stable ``hash_array`` on distinct words, a splitmix64 combination for n-grams);
* fingerprint: per document and bit, the sum over features of +1 (bit set) / -1 (not set);
  the fingerprint bit is 1 where the sum is positive (counted 8 bits at a time in uint64
  lanes, see :func:`_add_bit_sums`);
* index: if two fingerprints differ in at most ``d`` bits, then splitting the 64 bits into
  ``b >= d + 1`` blocks, at least ``b - d`` blocks are equal (pigeonhole). For every choice
  of ``b - d`` blocks, fingerprints are sorted by those bits and only those sharing them are
  compared (exact distance by popcount). For small ``d`` that is ``b = d + 1`` sorts of
  single-block keys; for larger ``d`` more, narrower blocks keep the groups small
  (:func:`choose_blocks`);
* clusters: connected components of the near pairs (scipy's union-find equivalent);
* queries against another set (new rows against the training fingerprints,
  :func:`nearest_in`): the same block keys, the reference side sorted once per choice of
  blocks and each query's run of equal keys found by binary search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations, pairwise
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

#: one set bit per byte: masks 8 bit-counters packed in a uint64
_LANES = np.uint64(0x0101010101010101)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads combined n-gram hashes over all 64 bits."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One 64-bit hash of two, in order (as word n-grams combine their words' hashes)."""
    with np.errstate(over="ignore"):
        return _mix64(a * np.uint64(0x9E3779B97F4A7C15) + b)


_WORD = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")


def arrow_text(texts: pd.Series | pa.Array) -> pa.Array:
    """The texts as a pyarrow large_string array (missing values stay null)."""
    import pyarrow as pa

    if isinstance(texts, pa.Array):
        return texts if texts.type == pa.large_string() else texts.cast(pa.large_string())
    return pa.array(texts.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)


@dataclass
class Words:
    """The word tokens of a set of documents, as ids into their distinct words."""

    ids: np.ndarray  #: int64 per token: its word's index in ``vocabulary``
    per_doc: np.ndarray  #: int64 per document: its number of tokens (tokens are in document order)
    vocabulary: np.ndarray  #: object: the distinct words (lowercased)

    def hashes(self) -> np.ndarray:
        """uint64 per distinct word (pandas' stable siphash of the word)."""
        import pandas as pd

        return (pd.util.hash_array(self.vocabulary, categorize=False) if len(self.vocabulary)
                else np.empty(0, np.uint64))

    def digits(self) -> np.ndarray:
        """bool per distinct word: it holds a digit (Python's ``\\d``; pyarrow's regex on ASCII words)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        vocab = pa.array(self.vocabulary, type=pa.large_string())
        out = pc.match_substring_regex(vocab, "[0-9]").to_numpy(zero_copy_only=False)
        for k in np.flatnonzero(~pc.string_is_ascii(vocab).to_numpy(zero_copy_only=False)):
            out[k] = _DIGIT.search(self.vocabulary[k]) is not None
        return out


def words(texts: pd.Series | pa.Array) -> Words:
    """The normalised words of every document, as ids into the distinct words.

    Words are the runs of word characters of the lowercased text (punctuation and spacing do
    not count). pyarrow splits at spaces in C++ (a space is never inside a word, so no word is
    cut) and numbers the distinct pieces; each *distinct* piece (far fewer than tokens) is
    split into its words once in Python, so "b,c" or "b\\nc" gives two words and ",," none —
    several times faster than a regex over every document.
    """
    import pyarrow.compute as pc

    arr = arrow_text(texts)
    # the ASCII kernel is faster and, on ASCII text, gives the same result
    ascii = pc.all(pc.string_is_ascii(arr)).as_py() is not False
    pieces = pc.split_pattern((pc.ascii_lower if ascii else pc.utf8_lower)(arr), " ")
    offsets = pieces.offsets.to_numpy(zero_copy_only=False)
    encoded = pc.dictionary_encode(pc.list_flatten(pieces))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    # a piece of ASCII word characters only (most pieces) is one word, itself; the regex
    # splits the others in Python
    dictionary = encoded.dictionary
    whole = pc.match_substring_regex(dictionary, "^[a-z0-9_]+$").to_numpy(zero_copy_only=False)
    other = np.flatnonzero(~whole)
    vocabulary = dict(zip(dictionary.filter(whole).to_pylist(), range(int(whole.sum()))))
    other_words = [[vocabulary.setdefault(w, len(vocabulary)) for w in _WORD.findall(piece)]
                   for piece in dictionary.take(other).to_pylist()]
    n_words = whole.astype(np.int64)
    n_words[other] = np.fromiter(map(len, other_words), np.int64, len(other))
    per_doc = np.diff(offsets).astype(np.int64)
    if n_words.max(initial=0) <= 1:  # no piece holds two words: drop the empty ones
        piece_word = np.full(len(whole), -1, np.int32)
        piece_word[whole] = np.arange(int(whole.sum()))
        piece_word[other] = np.fromiter((ws[0] if ws else -1 for ws in other_words), np.int32, len(other))
        ids = piece_word[codes]
        if not n_words.all():
            empty = np.flatnonzero(ids < 0)
            per_doc -= np.bincount(np.searchsorted(offsets - offsets[0], empty, side="right") - 1,
                                   minlength=len(per_doc))
            ids = np.delete(ids, empty)
    else:  # expand every piece occurrence into its words
        first = np.cumsum(n_words) - n_words  # piece c owns flat[first[c]:first[c] + n_words[c]]
        flat = np.empty(int(n_words.sum()), np.int64)
        flat[first[whole]] = np.arange(int(whole.sum()))
        flat[np.repeat(first[other], n_words[other]) + _within(n_words[other])] = \
            np.fromiter((w for ws in other_words for w in ws), np.int64, int(n_words[other].sum()))
        count = n_words[codes]
        ids = flat[np.repeat(first[codes], count) + _within(count)]
        before = np.r_[0, np.cumsum(count)]  # tokens per document: the words of its pieces
        per_doc = before[offsets[1:] - offsets[0]] - before[offsets[:-1] - offsets[0]]
    return Words(ids, per_doc, np.asarray(list(vocabulary), dtype=object))


def _within(count: np.ndarray) -> np.ndarray:
    """0, 1, ..., count[k] - 1 for every k, concatenated."""
    return np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)


def tokenize(texts: pd.Series | pa.Array, numbers: bool = False) -> tuple[np.ndarray, ...]:
    """Normalised word tokens of every document (:func:`words`): (token hashes, document index
    per token) and, with ``numbers``, whether each token holds a digit."""
    tokens = words(texts)
    out = tokens.hashes()[tokens.ids], np.repeat(np.arange(len(tokens.per_doc)), tokens.per_doc)
    return (*out, tokens.digits()[tokens.ids]) if numbers else out


def ngram_levels(hashes: np.ndarray, doc: np.ndarray, ngram: int):
    """Yield (feature hashes, document index) for word 1-grams, 2-grams, ... ``ngram``-grams.

    Each level stays ordered by document, and n-grams never cross documents.
    """
    yield hashes, doc
    combined = hashes
    for n in range(2, ngram + 1):
        same_doc = doc[n - 1:] == doc[:len(doc) - n + 1]
        combined = combine(combined[:-1], hashes[n - 1:])
        yield combined[same_doc], doc[:len(doc) - n + 1][same_doc]


def _add_bit_sums(feats: np.ndarray, doc: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None:
    """Add, per document, how many features set each of the 64 bits (``feats`` sorted by doc).

    Bit-sliced counting: after shifting by r and masking one bit per byte, a uint64 holds 8
    independent 0/1 counters (bits r, r+8, ..., r+56) that plain uint64 addition sums in
    parallel. A byte counts to 255, so documents are cut into segments of <= 255 features.
    """
    if not len(doc):
        return
    doc_start = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    rank = np.arange(len(doc)) - np.repeat(doc_start, np.diff(np.r_[doc_start, len(doc)]))
    seg_start = np.flatnonzero(rank % 255 == 0)
    seg_doc = doc[seg_start]
    part = np.empty((len(seg_start), 64), dtype=np.int32)
    for r in range(8):
        lanes = np.add.reduceat((feats >> np.uint64(r)) & _LANES, seg_start)
        part[:, r::8] = lanes.astype("<u8").view(np.uint8).reshape(-1, 8)
    if len(seg_start) > len(doc_start):  # long documents: several segments to add up
        np.add.at(sums, seg_doc, part)
    else:
        sums[seg_doc] += part
    counts += np.bincount(doc, minlength=len(counts))


def fingerprints(texts: pd.Series, ngram: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """64-bit SimHash per document and whether the document had any token."""
    hashes, doc = tokenize(texts)
    n = len(texts)
    sums = np.zeros((n, 64), dtype=np.int32)
    counts = np.zeros(n, dtype=np.int64)
    for feats, fdoc in ngram_levels(hashes, doc, ngram):
        _add_bit_sums(feats, fdoc, sums, counts)
    majority = 2 * sums > counts[:, None]
    out = np.packbits(majority, axis=1, bitorder="little").view("<u8").ravel().astype(np.uint64)
    return out, counts > 0


def near_pairs(fp: np.ndarray, max_distance: int, blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of fingerprints within ``max_distance`` bits, via the block index.

    Identical fingerprints are collapsed first (each group joined by a chain of pairs), so a
    huge cluster of exact copies costs nothing in the block comparisons.
    """
    d = int(max_distance)
    b = blocks or choose_blocks(len(fp), d)
    if not d < b <= 64:
        raise ValueError(f"blocks must be in ({d}, 64], got {b}")
    uniq, first, inverse = np.unique(fp, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    same = inverse[order][1:] == inverse[order][:-1]
    pairs_i, pairs_j = [order[:-1][same]], [order[1:][same]]
    if d > 0:
        for mask in _key_masks(b, d):
            ui, uj = _close_pairs_sharing_key(uniq, uniq & mask, d)
            pairs_i.append(first[ui])
            pairs_j.append(first[uj])
    i, j = np.concatenate(pairs_i), np.concatenate(pairs_j)
    return np.minimum(i, j), np.maximum(i, j)


def _key_masks(b: int, d: int):
    """The bit masks of every choice of ``b - d`` of the ``b`` blocks (the sort keys)."""
    edges = np.linspace(0, 64, b + 1).astype(int)
    block_masks = [np.uint64(((1 << int(hi - lo)) - 1) << int(lo)) for lo, hi in pairwise(edges)]
    for chosen in combinations(range(b), b - d):
        mask = np.uint64(0)
        for k in chosen:
            mask |= block_masks[k]
        yield mask


def nearest_in(query: np.ndarray, ref: np.ndarray, max_distance: int,
               blocks: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query fingerprint, its nearest reference fingerprint within ``max_distance`` bits.

    Returns (query index, reference index, Hamming distance) for the queries that have one;
    ties go to the lowest reference index. Works like :func:`near_pairs` across two sets:
    identical fingerprints are collapsed on both sides, and for every choice of ``b - d``
    blocks the reference keys are sorted once and each query's run of equal keys is found
    by binary search (no pairwise scan).
    """
    d = int(max_distance)
    empty = np.empty(0, np.int64)
    if not len(query) or not len(ref):
        return empty, empty, empty
    b = blocks or choose_blocks(max(len(query), len(ref)), d)
    if not d < b <= 64:
        raise ValueError(f"blocks must be in ({d}, 64], got {b}")
    uq, q_inverse = np.unique(query, return_inverse=True)
    ur, r_first = np.unique(ref, return_index=True)  # first = lowest reference index per fingerprint
    found_q, found_r, found_d = [empty], [empty], [empty]
    for mask in _key_masks(b, d):
        qi, ri = _pairs_sharing_key_across(uq, ur, mask, d)
        found_q.append(qi)
        found_r.append(r_first[ri])
        found_d.append(np.bitwise_count(uq[qi] ^ ur[ri]).astype(np.int64))
    qi, ri, dist = np.concatenate(found_q), np.concatenate(found_r), np.concatenate(found_d)
    # per unique query: the smallest distance, then the lowest reference index
    order = np.lexsort((ri, dist, qi))
    first = np.r_[True, qi[order][1:] != qi[order][:-1]] if len(order) else np.empty(0, bool)
    best = order[first]
    best_r = np.full(len(uq), -1, np.int64)
    best_d = np.zeros(len(uq), np.int64)
    best_r[qi[best]], best_d[qi[best]] = ri[best], dist[best]
    per_query = best_r[q_inverse]
    hit = np.flatnonzero(per_query >= 0)
    return hit, per_query[hit], best_d[q_inverse][hit]


def _pairs_sharing_key_across(query: np.ndarray, ref: np.ndarray, mask: np.uint64,
                              d: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, reference) index pairs whose masked bits are equal and that are within ``d``
    bits, candidates generated in chunks of about ``_PAIRS_AT_ONCE`` (verified by popcount)."""
    ref_keys = ref & mask
    order = np.argsort(ref_keys, kind="stable")
    sorted_keys = ref_keys[order]
    q_keys = query & mask
    lo = np.searchsorted(sorted_keys, q_keys, side="left")
    count = np.searchsorted(sorted_keys, q_keys, side="right") - lo
    with_candidates = np.flatnonzero(count)
    if not len(with_candidates):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, count = lo[with_candidates], count[with_candidates]
    # cut the queries where the running candidate count passes a multiple of _PAIRS_AT_ONCE
    running = np.cumsum(count)
    step = max(_PAIRS_AT_ONCE, 1)
    cuts = np.searchsorted(running, np.arange(step, int(running[-1]), step), side="right")
    out_q, out_r = [], []
    for part in np.split(np.arange(len(count)), np.unique(cuts)):
        c = count[part]
        total = int(c.sum())
        qi = np.repeat(with_candidates[part], c)
        ri = order[np.repeat(lo[part], c) + np.arange(total) - np.repeat(np.cumsum(c) - c, c)]
        close = np.bitwise_count(query[qi] ^ ref[ri]) <= d
        out_q.append(qi[close])
        out_r.append(ri[close])
    return np.concatenate(out_q), np.concatenate(out_r)


def choose_blocks(n: int, d: int) -> int:
    """Blocks b minimising the estimated work: C(b, d) sorted tables, each costing a sort of
    n keys plus the pairs that share ``64 (b - d) / b`` random key bits (n^2 / 2^(bits+1))."""
    from math import comb, log2

    def cost(b: int) -> float:
        bits = 64 * (b - d) / b
        return comb(b, d) * (n * max(1.0, log2(max(n, 2))) + n * n / 2 ** (bits + 1))

    return min(range(d + 1, min(64, 3 * d + 4) + 1), key=cost)


#: candidate pairs of one sorted table generated at once; above this, offset by offset
_PAIRS_AT_ONCE = 4_000_000


def _close_pairs_sharing_key(fp: np.ndarray, keys: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs sharing a key and within ``d`` bits: sort by key, then compare every pair inside
    each run of equal keys (verified by popcount, so memory holds only the close pairs)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    sorted_fp = fp[order]
    n = len(k)
    run_start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    run_end = np.r_[run_start[1:], n]
    end = np.repeat(run_end, run_end - run_start)
    later = end - np.arange(n) - 1  # how many later elements share each element's key
    total = int(later.sum())
    if total <= _PAIRS_AT_ONCE:  # every candidate pair in one vectorised step
        i = np.repeat(np.arange(n), later)
        j = i + 1 + np.arange(total) - np.repeat(np.cumsum(later) - later, later)
        close = np.bitwise_count(sorted_fp[i] ^ sorted_fp[j]) <= d
        return order[i[close]], order[j[close]]
    # huge runs (many near-identical texts): compare with the element o places later, o = 1, 2, ...
    pos = np.flatnonzero(later > 0)
    end = end[pos]
    out_i, out_j = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    offset = 1
    while len(pos):
        ok = pos + offset < end
        pos, end = pos[ok], end[ok]
        close = np.bitwise_count(sorted_fp[pos] ^ sorted_fp[pos + offset]) <= d
        out_i.append(order[pos[close]])
        out_j.append(order[pos[close] + offset])
        offset += 1
    return np.concatenate(out_i), np.concatenate(out_j)


def clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cluster label of each of ``n`` items given linking pairs (connected components)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]
