"""MinHash LSH for all documents at once, in numpy, with exact Jaccard verification.

Written by hand because the libraries compute one document at a time: datasketch's
``MinHash``/``MinHashLSH`` loop in Python per document and per band (``benchmarks/clean.py``
measures the difference). The method is the standard one (Broder 1997; Leskovec et al.,
*Mining of Massive Datasets*, ch. 3):

* shingles: the distinct word n-grams (``1..ngram`` words) of each document, hashed to 64
  bits (the top 40 bits kept), in one flat array with per-document offsets (CSR layout).
  The corpus is tokenised CHUNK_BYTES of text at a time (:func:`simhash.words`: pyarrow
  splits and numbers the pieces, each distinct piece becomes words once); word sets (the
  default 1-grams) are deduplicated on word ids with 32-bit sort keys, each distinct word
  hashed once;
* signatures: ``num_perm`` multiplicative hash functions ``h(x) = a x mod 2^32`` (a random
  and odd, x the low 32 bits of a shingle's hash), all of them applied to one cache-sized
  block of shingles after another, the minimum per document by ``np.minimum.reduceat``;
* banding: ``bands`` bands of ``rows`` values each are hashed to one 64-bit key per
  (document, band); documents sharing any key are candidates (one sort for all bands);
  ``rows`` is chosen so that a pair at the threshold Jaccard becomes a candidate with
  probability >= 0.995. Where the buckets are crowded (documents that share a boilerplate
  share many band keys) the exact prefix filter is used instead when it gives fewer pairs
  (:func:`prefix_runs`);
* verification: pairs whose set sizes rule the threshold out are never formed; candidates
  whose signatures agree far too little are dropped (5 standard errors below the threshold,
  on 2 bits of every value first, then on whole values), then every remaining pair's *exact*
  Jaccard of the shingle sets is computed, so precision does not depend on the signature's
  estimate. Candidates are formed and checked a block at a time, so crowded buckets do not
  fill the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from . import simhash

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: probability that a pair exactly at the threshold becomes a candidate (banding S-curve)
CANDIDATE_PROBABILITY = 0.995
#: candidate pairs verified at once (the pair number shares a uint64 with a shingle)
_PAIRS_AT_ONCE = 100_000
#: band-bucket pairs per document above which the prefix filter's count is computed too
CROWDED_PAIRS_PER_DOC = 50
#: candidate pairs generated and checked at once
_CANDIDATES_AT_ONCE = 1 << 22


@dataclass
class Shingles:
    """Distinct shingle hashes of each document: ``hashes[starts[d]:starts[d + 1]]``."""

    hashes: np.ndarray  #: uint64
    starts: np.ndarray  #: int64, length documents + 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def take(self, docs: np.ndarray) -> Shingles:
        """The shingle sets of ``docs`` (in that order)."""
        sizes = self.sizes[docs]
        starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        within = np.arange(int(starts[-1])) - np.repeat(starts[:-1], sizes)
        return Shingles(self.hashes[np.repeat(self.starts[docs], sizes) + within], starts)


#: a word with a digit (a reference, an amount, a date) counts this many times: texts built
#: from the same template that differ in their numbers are different records, while edited
#: copies keep them (Jaccard of a 20-word note with another reference number: 0.91 -> 0.77)
NUMBER_WEIGHT = 3
#: bits kept of each shingle's 64-bit hash: room for the document number in one sort key
#: (2^40 values: a chance collision is expected only past about a million distinct shingles)
SHINGLE_BITS = 40
#: documents are tokenised this many bytes of text at a time (at most _CHUNK_DOCS documents):
#: the working arrays (about 60 bytes per word) stay bounded whatever the corpus size
CHUNK_BYTES = 1 << 24
_CHUNK_DOCS = 1 << 20
#: shingles hashed at once per permutation in :func:`signatures` (fits in the L2 cache)
_SHINGLES_AT_ONCE = 1 << 17


def shingles(texts: pd.Series, ngram: int, number_weight: int = NUMBER_WEIGHT) -> Shingles:
    """The distinct word 1..``ngram``-grams of every document (same tokens as SimHash); a word
    holding a digit counts ``number_weight`` times (as that many distinct shingles)."""
    text = simhash.arrow_text(texts)
    offsets = np.frombuffer(text.buffers()[1], np.int64, len(text) + 1, text.offset * 8)
    hashes, sizes = [], []
    for lo, hi in _chunks(offsets):
        h, size = _chunk_shingles(text.slice(lo, hi - lo), ngram, number_weight)
        hashes.append(h)
        sizes.append(size)
    sizes = _joined(sizes, np.int64)
    return Shingles(_joined(hashes, np.uint64), np.r_[0, np.cumsum(sizes)].astype(np.int64))


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    """The parts end to end (without a copy when there is one)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, dtype)


def _chunks(offsets: np.ndarray):
    """(first, end) document ranges of about CHUNK_BYTES of text (``offsets``: cumulative bytes)."""
    n, lo = len(offsets) - 1, 0
    while lo < n:
        hi = int(np.searchsorted(offsets, offsets[lo] + CHUNK_BYTES, side="right")) - 1
        hi = min(max(hi, lo + 1), lo + _CHUNK_DOCS, n)
        yield lo, hi
        lo = hi


def _chunk_shingles(text, ngram: int, number_weight: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct shingle hashes of the documents of ``text`` (grouped by document) and their counts."""
    if ngram == 1:
        return _word_sets(simhash.words(text), number_weight)
    hashes, doc, digit = simhash.tokenize(text, numbers=True)
    feats, docs = map(list, zip(*simhash.ngram_levels(hashes, doc, ngram)))
    for k in range(1, number_weight):
        feats.append(_weighted(hashes[digit], k))
        docs.append(doc[digit])
    # one sort of (document, shingle) keys packed in an int64 (a chunk has < 2^23 documents)
    key = (np.concatenate(docs) << SHINGLE_BITS) | _kept_bits(np.concatenate(feats)).view(np.int64)
    key = _distinct(key)
    sizes = np.bincount(key >> SHINGLE_BITS, minlength=len(text))
    return (key & ((1 << SHINGLE_BITS) - 1)).view(np.uint64), sizes


def _weighted(hashes: np.ndarray, k: int) -> np.ndarray:
    """The hash of the k-th extra copy of each (digit-holding) shingle."""
    return simhash.combine(hashes, np.full(len(hashes), k, np.uint64))


def _kept_bits(hashes: np.ndarray) -> np.ndarray:
    """The top SHINGLE_BITS bits of 64-bit hashes."""
    return hashes >> np.uint64(64 - SHINGLE_BITS)


def _word_sets(tokens: simhash.Words, number_weight: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct word hashes per document (the 1-gram shingles, same sets as the n-gram path).

    Deduplicated on small integer ids instead of hashes: the (document, item) sort keys fit
    in a uint32 for a run of documents (twice as fast to sort as 64-bit keys) and each
    distinct word is hashed once. Items are the words plus, for a word with a digit, its
    ``number_weight - 1`` extra copies; words whose kept hash bits collide are one item.
    """
    import pandas as pd

    word_hash = tokens.hashes()
    n_words, per_doc = len(word_hash), tokens.per_doc
    digit = tokens.digits() if number_weight > 1 else np.zeros(n_words, bool)
    digit_rank = np.cumsum(digit) - 1
    n_digit = int(digit.sum())
    copies = [_weighted(word_hash[digit], k) for k in range(1, number_weight)] if n_digit else []
    item_of, item_hash = pd.factorize(_kept_bits(np.concatenate([word_hash, *copies])))
    m = len(item_hash)
    if not m:
        return np.empty(0, np.uint64), np.zeros(len(per_doc), np.int64)
    item_of = item_of.astype(np.uint32)
    ids = item_of[tokens.ids]
    token_start = np.r_[0, np.cumsum(per_doc)]
    sizes = np.zeros(len(per_doc), np.int64)
    items = []
    run = max(1, (2**32 - 1) // m)  # documents per run: local document x m + item < 2^32
    for d0 in range(0, len(per_doc), run):
        d1 = min(d0 + run, len(per_doc))
        t0, t1 = token_start[d0], token_start[d1]
        key = np.repeat(np.arange(d1 - d0, dtype=np.uint32) * np.uint32(m), per_doc[d0:d1])
        key += ids[t0:t1]
        if n_digit:
            word = tokens.ids[t0:t1]
            with_digit = digit[word]
            base = key[with_digit] - ids[t0:t1][with_digit]
            rank = digit_rank[word[with_digit]]
            key = np.concatenate([key] + [base + item_of[n_words + (k - 1) * n_digit + rank]
                                          for k in range(1, number_weight)])
        key.sort()
        if len(key):
            first = np.empty(len(key), bool)
            first[0] = True
            np.not_equal(key[1:], key[:-1], out=first[1:])
            key = key[first]
        # documents' boundaries in the sorted keys: local document d starts at key d x m
        bounds = np.searchsorted(key, np.arange(d1 - d0 + 1, dtype=np.uint32) * np.uint32(m))
        sizes[d0:d1] = np.diff(bounds)
        items.append(np.remainder(key, np.uint32(m), out=key))
    return item_hash[_joined(items, np.uint32)], sizes


def multipliers(num_perm: int, seed: int) -> np.ndarray:
    """The odd 32-bit multipliers of ``num_perm`` multiplicative hash functions."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)


def signatures(sets: Shingles, num_perm: int, seed: int) -> np.ndarray:
    """uint32 (documents x ``num_perm``) MinHash signatures; documents without shingles get
    all-ones rows (they never match: callers leave them out).

    Hash function k is ``h_k(x) = a_k x mod 2^32`` on the low 32 bits of each shingle's
    hash: a bijection of 32-bit values (a_k odd), so two shingles never tie, and the shingle
    hashes are already random, so the minimum of each function falls on a uniformly chosen
    shingle. uint32 lanes are twice as many per SIMD instruction as uint64 ones, and going
    through the shingles ``_SHINGLES_AT_ONCE`` at a time, all functions per block, keeps the
    block in cache: several times faster than whole-array passes.
    """
    a = multipliers(num_perm, seed)
    n = len(sets.starts) - 1
    out = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    docs = np.flatnonzero(sets.sizes)
    if not len(docs):
        return out
    x = sets.hashes.astype(np.uint32)
    starts = sets.starts[docs]
    ends = sets.starts[docs + 1]
    # blocks of whole documents, a new one at the first document past each _SHINGLES_AT_ONCE
    block = np.unique(np.r_[np.searchsorted(starts, np.arange(0, len(x), _SHINGLES_AT_ONCE)), len(docs)])
    found = np.empty((num_perm, len(docs)), np.uint32)
    h = np.empty(_SHINGLES_AT_ONCE + int(sets.sizes.max()), np.uint32)
    for first, end in zip(block[:-1], block[1:]):
        lo, hi = starts[first], ends[end - 1]
        xs, hs, at = x[lo:hi], h[:hi - lo], starts[first:end] - lo
        for k in range(num_perm):
            np.multiply(xs, a[k], out=hs)
            np.minimum.reduceat(hs, at, out=found[k, first:end])
    out[docs] = found.T
    return out


def choose_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band (fewest false candidates) such that a
    pair at ``threshold`` becomes a candidate with probability >= CANDIDATE_PROBABILITY."""
    best = (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if 1 - (1 - threshold**r) ** b >= CANDIDATE_PROBABILITY:
            best = (b, r)
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 key per (document, band): the band's values hashed together with the band number."""
    n = len(sigs)
    vals = sigs[:, :bands * rows].reshape(n, bands, rows).astype(np.uint64)
    key = np.broadcast_to(np.arange(bands, dtype=np.uint64), (n, bands)).copy()
    for r in range(rows):
        key = simhash.combine(key, vals[:, :, r])
    return key


def _distinct(x: np.ndarray) -> np.ndarray:
    """The distinct values of ``x``, sorted (numpy 2.4's hash-based ``np.unique`` is an order of
    magnitude slower than a sort on arrays of a million int64)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def _expand(lo: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``lo[k], lo[k] + 1, ..., lo[k] + count[k] - 1`` for every k, concatenated."""
    return np.repeat(lo, count) + simhash._within(count)


#: low bits of a run key that hold the set size (sizes beyond are capped: more pairs, none lost)
_SIZE_BITS = 24
_SIZE_CAP = np.uint64((1 << _SIZE_BITS) - 1)


def _runs(keys: np.ndarray, docs: np.ndarray, sizes: np.ndarray, threshold: float,
          emits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``docs`` sorted into runs of equal ``keys`` (uint64 with the low _SIZE_BITS bits free),
    smallest set first within a run, and per element how many later elements of its run it
    pairs with: those whose set (``sizes``) is small enough for Jaccard >= ``threshold`` (it
    is at most min / max) and, with ``emits``, none where an element is not marked (sets of
    equal size are then in document order in every run). One sort of keys with the sizes in
    their low bits."""
    size = np.minimum(sizes[docs], int(_SIZE_CAP)).astype(np.uint64)
    largest = np.minimum(np.floor((size + 1e-9) / threshold), float(_SIZE_CAP)).astype(np.uint64)
    sort_key = keys | size
    order = np.argsort(sort_key) if emits is None else np.lexsort((docs, sort_key))
    sort_key = sort_key[order]
    upper = np.searchsorted(sort_key, (sort_key & ~_SIZE_CAP) | largest[order], side="right")
    later = upper - np.arange(len(docs)) - 1
    return docs[order], later if emits is None else np.where(emits[order], later, 0)


def prefix_runs(sets: Shingles, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Documents grouped by the shingles of their prefixes (see :func:`_runs`): prefix
    filtering (Bayardo et al., WWW 2007), an exact candidate rule.

    Shingles are ordered rarest first (fewest documents, then hash) and a set of size m keeps
    its first ``m - ceil(t m) + 1`` (t = ``threshold``). Two sets x, y with m_x <= m_y
    (ties by document) and Jaccard >= t share at least ``a = ceil(t (m_x + m_y) / (1 + t))``
    shingles, so x's first ``m_x - a + 1`` and y's first ``m_y - a + 1`` share one; with
    ``t m_y <= m_x``, ``a`` is at least ``ceil(t m_y)`` and at least ``ceil(2t m_x / (1 + t))``,
    so the pairs that y's prefix forms with the shorter "index prefix" of x,
    ``m_x - ceil(2t m_x / (1 + t)) + 1`` (Xiao et al., PPJoin, WWW 2008), miss no pair above
    the threshold. Shingles every document has (a boilerplate) come last and fall out of the
    prefixes, where they crowd the MinHash band buckets.
    """
    import pandas as pd

    sizes = sets.sizes
    code, distinct = pd.factorize(sets.hashes)
    rank = np.empty(len(distinct), np.int64)
    rank[np.lexsort((distinct, np.bincount(code, minlength=len(distinct))))] = np.arange(len(distinct))
    # per document its shingles rarest first: one sort of (document, rank) keys
    key = np.sort((np.repeat(np.arange(len(sizes)), sizes) << 32) | rank[code])
    prefix = sizes - np.ceil(threshold * sizes - 1e-9).astype(np.int64) + 1
    indexed = sizes - np.ceil(2 * threshold / (1 + threshold) * sizes - 1e-9).astype(np.int64) + 1
    within = np.arange(len(key)) - np.repeat(sets.starts[:-1], sizes)
    kept = within < np.repeat(prefix, sizes)
    emits = (within < np.repeat(indexed, sizes))[kept]
    key = key[kept]
    return _runs((key & 0xFFFFFFFF).astype(np.uint64) << np.uint64(_SIZE_BITS), key >> 32, sizes, threshold,
                 emits)


def cross_pairs(query_keys: np.ndarray, ref_keys: np.ndarray, check=None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (query, reference) document pairs sharing a band key and passing ``check``
    (none: all), generated about _CANDIDATES_AT_ONCE at a time (whole query documents)."""
    bands = ref_keys.shape[1]
    flat = ref_keys.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_keys = flat[order]
    q = query_keys.ravel()
    lo = np.searchsorted(sorted_keys, q, side="left")
    count = np.searchsorted(sorted_keys, q, side="right") - lo
    total = np.cumsum(count.reshape(-1, bands).sum(axis=1))
    cuts = np.searchsorted(total, np.arange(_CANDIDATES_AT_ONCE, int(total[-1]) if len(total) else 0,
                                            _CANDIDATES_AT_ONCE))
    m = len(ref_keys)
    kept = []
    for first, end in pairwise(np.unique(np.r_[0, cuts, len(query_keys)]) * bands):
        qi = np.repeat(np.arange(first, end) // bands, count[first:end])
        ri = order[_expand(lo[first:end], count[first:end])] // bands
        pair = _distinct(qi * m + ri)
        i, j = (pair // m, pair % m) if check is None else check(pair // m, pair % m)
        kept.append(i * m + j)
    pair = _distinct(np.concatenate(kept)) if kept else np.empty(0, np.int64)
    return pair // m, pair % m


def jaccard(left: Shingles, right: Shingles, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the sets ``left[i]`` and ``right[j]``, pair by pair.

    Both sets of a pair are tagged with the pair's number and sorted together: a shingle in
    both shows up as two equal neighbours (each set holds a shingle once).
    """
    out = np.empty(len(i))
    si, sj = left.sizes, right.sizes
    for s in range(0, len(i), _PAIRS_AT_ONCE):
        ii, jj = i[s:s + _PAIRS_AT_ONCE], j[s:s + _PAIRS_AT_ONCE]
        pair = np.arange(len(ii), dtype=np.uint64) << np.uint64(SHINGLE_BITS)
        a, b = left.take(ii), right.take(jj)
        key = np.sort(np.concatenate([np.repeat(pair, a.sizes) | a.hashes, np.repeat(pair, b.sizes) | b.hashes]))
        shared = key[1:][key[1:] == key[:-1]] >> np.uint64(SHINGLE_BITS)
        inter = np.bincount(shared.astype(np.int64), minlength=len(ii))
        out[s:s + _PAIRS_AT_ONCE] = inter / np.maximum(si[ii] + sj[jj] - inter, 1)
    return out


class _SignatureCheck:
    """Drops candidate pairs whose signatures agree far too little: 5 standard errors below
    what a pair at ``threshold`` gives, so a pair at the threshold is dropped with probability
    < 1e-6 at each stage, and the exact check only sees pairs that may pass.

    Three stages, cheapest first: the lowest 2 bits of every value (b-bit minwise hashing, Li
    and König 2010: 32 values in a uint64, two values agree with probability J + (1 - J) / 4),
    then 32 whole values, then all of them.
    """

    def __init__(self, sig_i: np.ndarray, sig_j: np.ndarray, threshold: float):
        self.sig_i, self.sig_j, self.threshold = sig_i, sig_j, threshold
        perms = sig_i.shape[1]
        self.lanes = 32 * (perms // 32)
        self.bits = (_two_bits(sig_i[:, :self.lanes]), _two_bits(sig_j[:, :self.lanes])) if self.lanes else None
        self.first = (np.ascontiguousarray(sig_i[:, :32]), np.ascontiguousarray(sig_j[:, :32])) if perms > 32 else None

    def __call__(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.threshold
        if self.bits is not None:
            p = t + (1 - t) / 4
            i, j = self._keep(i, j, self.bits, _equal_lanes, self.lanes * p - 5 * np.sqrt(self.lanes * p * (1 - p)))
        for a, b in filter(None, (self.first, (self.sig_i, self.sig_j))):
            used = a.shape[1]
            i, j = self._keep(i, j, (a, b), _equal_values, used * (t - 5 * np.sqrt(t * (1 - t) / used)))
        return i, j

    @staticmethod
    def _keep(i, j, sides, agreement, floor):
        keep = np.empty(len(i), bool)
        for s in range(0, len(i), _PAIRS_AT_ONCE):
            e = s + _PAIRS_AT_ONCE
            keep[s:e] = agreement(sides[0][i[s:e]], sides[1][j[s:e]]) >= floor
        return i[keep], j[keep]


def _two_bits(sigs: np.ndarray) -> np.ndarray:
    """The lowest 2 bits of each signature value, 32 values per uint64."""
    n, perms = sigs.shape
    lanes = (sigs & 3).astype(np.uint64).reshape(n, perms // 32, 32) << (2 * np.arange(32, dtype=np.uint64))
    return np.bitwise_or.reduce(lanes, axis=2)


_LOW_BITS = np.uint64(0x5555555555555555)


def _equal_lanes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how many 2-bit lanes of ``a`` and ``b`` are equal."""
    x = a ^ b
    differ = np.bitwise_count((x | (x >> np.uint64(1))) & _LOW_BITS).sum(axis=1, dtype=np.int64)
    return 32 * a.shape[1] - differ


def _equal_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.count_nonzero(a == b, axis=1)


def _checked_pairs(docs: np.ndarray, later: np.ndarray, n: int, check) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs (i < j) of each element of ``docs`` with its ``later`` next ones (see
    :func:`_runs`) that pass ``check``, generated _CANDIDATES_AT_ONCE at a time: crowded
    buckets do not fill the memory."""
    total = np.cumsum(later)
    cuts = np.searchsorted(total, np.arange(_CANDIDATES_AT_ONCE, int(total[-1]) if len(total) else 0,
                                            _CANDIDATES_AT_ONCE))
    kept = []
    for lo, hi in pairwise(np.unique(np.r_[0, cuts, len(docs)])):
        has = lo + np.flatnonzero(later[lo:hi])
        a, b = docs[np.repeat(has, later[has])], docs[_expand(has + 1, later[has])]
        first, second = np.minimum(a, b), np.maximum(a, b)
        pair = _distinct((first * n + second)[first != second])
        i, j = check(pair // n, pair % n)
        kept.append(i * n + j)
    pair = _distinct(np.concatenate(kept)) if kept else np.empty(0, np.int64)
    return pair // n, pair % n


def near_pairs(sets: Shingles, sigs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of documents whose shingle sets have Jaccard >= ``threshold``.

    Candidates are the pairs sharing a band key; where those buckets are crowded (more than
    CROWDED_PAIRS_PER_DOC pairs a document: documents that share much of their text) and the
    exact prefix filter (:func:`prefix_runs`) gives fewer pairs, those pairs instead. Each
    passes the size bound and the signature check before its exact Jaccard is computed.
    """
    n = len(sigs)
    bands, rows = choose_bands(sigs.shape[1], threshold)
    keys = band_keys(sigs, bands, rows)
    # (band keys agreeing in all but their low bits share a run: a few more pairs, none lost)
    docs, later = _runs(keys.ravel() & ~_SIZE_CAP, np.arange(keys.size) // bands, sets.sizes, threshold)
    if later.sum() > CROWDED_PAIRS_PER_DOC * n:
        by_prefix = prefix_runs(sets, threshold)
        if by_prefix[1].sum() < later.sum():
            docs, later = by_prefix
    i, j = _checked_pairs(docs, later, n, _SignatureCheck(sigs, sigs, threshold))
    close = jaccard(sets, sets, i, j) >= threshold
    return i[close], j[close]


def _similar_sizes(left: np.ndarray, right: np.ndarray, i: np.ndarray, j: np.ndarray,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The pairs whose set sizes allow Jaccard >= ``threshold`` (it is at most min / max)."""
    a, b = left[i], right[j]
    keep = np.minimum(a, b) >= threshold * np.maximum(a, b) - 1e-9
    return i[keep], j[keep]


def nearest_in(query: Shingles, query_sigs: np.ndarray, ref: Shingles, ref_sigs: np.ndarray,
               threshold: float, ref_rank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query document, its most similar reference document with Jaccard >=
    ``threshold`` (lowest ``ref_rank``, default the reference index, on a tie):
    (query index, reference index, Jaccard)."""
    empty = np.empty(0, np.int64)
    nq = len(query_sigs)
    if not nq or not len(ref_sigs):
        return empty, empty, np.empty(0)
    bands, rows = choose_bands(query_sigs.shape[1], threshold)
    signature_check = _SignatureCheck(query_sigs, ref_sigs, threshold)

    def check(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return signature_check(*_similar_sizes(query.sizes, ref.sizes, q, r, threshold))

    q, r = cross_pairs(band_keys(query_sigs, bands, rows), band_keys(ref_sigs, bands, rows), check)
    sim = jaccard(query, ref, q, r)
    close = sim >= threshold
    q, r, sim = q[close], r[close], sim[close]
    best = np.lexsort((r if ref_rank is None else ref_rank[r], -sim, q))
    first = np.r_[True, q[best][1:] != q[best][:-1]] if len(best) else np.empty(0, bool)
    best = best[first]
    return q[best], r[best], sim[best]
