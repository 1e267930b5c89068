"""MinHash dedup on shapes its benchmark did not start with: long documents, a boilerplate
every document shares, unicode, empty texts, identical copies, corpora tokenised in chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgeline.core import Table
from forgeline.plugins.clean import Dedup, minhash

VOCAB = np.array([f"w{i}" for i in range(5000)])


def documents(n: int, words: tuple[int, int], seed: int, copies: int, edits: int,
              boilerplate: int = 0) -> tuple[list[str], np.ndarray]:
    """Zipf-like documents, the last ``copies`` of them near copies (``edits`` words replaced,
    re-cased, punctuation added); with ``boilerplate``, every original is wrapped in the
    same header and footer of that many words. Returns the texts and the copied index (-1)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(VOCAB) + 1) ** 0.8
    p /= p.sum()
    shared = list(rng.choice(VOCAB, boilerplate, p=p))
    docs = [shared[:boilerplate // 2] + list(rng.choice(VOCAB, rng.integers(words[0], words[1] + 1), p=p))
            + shared[boilerplate // 2:] for _ in range(n)]
    source = [-1] * n
    for k in range(copies):
        s = int(rng.integers(0, n))
        w = list(docs[s])
        for at in rng.choice(len(w), edits, replace=False):
            w[at] = f"edit{k}x{at}"
        docs.append(w)
        source.append(s)
    texts = [" ".join(d) for d in docs]
    return [t.upper() + " !!" if i >= n else t for i, t in enumerate(texts)], np.array(source)


def text_table(texts: list) -> Table:
    return Table.from_frame(pd.DataFrame({"text": texts}), overrides={"text": {"modality": "text"}})


def removed_mask(texts: list) -> np.ndarray:
    table = text_table(texts)
    return np.isin(table.row_ids, Dedup().fit_apply(table).flagged)


def brute_force_pairs(sets: minhash.Shingles, threshold: float) -> set[tuple[int, int]]:
    n = len(sets.starts) - 1
    a, b = np.triu_indices(n, 1)
    sim = minhash.jaccard(sets, sets, a, b)
    return {(x, y) for x, y, s in zip(a.tolist(), b.tolist(), sim) if s >= threshold}


def test_thousand_word_documents():
    texts, source = documents(60, (1000, 1000), seed=1, copies=12, edits=30)
    removed = removed_mask(texts)
    assert (removed == (source >= 0)).all()


def test_boilerplate_shared_by_every_document():
    """Distinct documents share a 100-word header and footer (Jaccard about 0.4-0.6 between
    them): only the copies go."""
    texts, source = documents(300, (30, 80), seed=2, copies=30, edits=3, boilerplate=100)
    removed = removed_mask(texts)
    assert (removed == (source >= 0)).all()


@pytest.mark.parametrize("crowded", [False, True])
def test_candidates_by_band_or_by_prefix_give_every_pair_above_the_threshold(monkeypatch, crowded):
    """Whichever candidate rule near_pairs takes (band buckets; the prefix filter where the
    buckets are crowded), the pairs it returns are exactly those a full scan finds."""
    if crowded:
        monkeypatch.setattr(minhash, "CROWDED_PAIRS_PER_DOC", 0)
    texts, _ = documents(200, (20, 60), seed=3, copies=60, edits=2, boilerplate=40)
    sets = minhash.shingles(pd.Series(texts), 1)
    i, j = minhash.near_pairs(sets, minhash.signatures(sets, 128, 1), 0.8)
    brute = brute_force_pairs(sets, 0.8)
    assert set(zip(i.tolist(), j.tolist())) == brute and len(brute) >= 60


def test_prefix_filter_misses_no_pair_above_the_threshold():
    """Every pair with Jaccard >= t shares a run of the prefix filter, for several t."""
    texts, _ = documents(150, (5, 40), seed=4, copies=60, edits=1, boilerplate=10)
    sets = minhash.shingles(pd.Series(texts), 1)
    for threshold in (0.5, 0.7, 0.8, 0.9):
        docs, later = minhash.prefix_runs(sets, threshold)
        found = set()
        for e in np.flatnonzero(later):
            for f in range(e + 1, e + 1 + later[e]):
                found.add((min(docs[e], docs[f]), max(docs[e], docs[f])))
        missing = brute_force_pairs(sets, threshold) - found
        assert not missing, (threshold, sorted(missing)[:5])


def test_unicode_case_and_spacing():
    texts = ["Éléphant ÉNORME dans la forêt, près du lac gelé",
             "éléphant énorme dans la FORÊT près du lac gelé!!",
             "東京 大阪 名古屋 札幌 福岡 神戸 京都 横浜",
             "東京\t大阪\n名古屋 札幌\u00a0福岡 神戸 京都 横浜",
             "Straße Über Ärger Öl Fuß Maß Größe Weiß",
             "a completely different sentence about other things entirely"]
    assert removed_mask(texts).tolist() == [False, True, False, True, False, False]


def test_empty_and_missing_texts_take_part_only_in_exact_matching():
    texts = ["", None, "   ", "!!! ...", "one two three four five six seven eight",
             "ONE two three four five six seven eight!", ""]
    table = text_table(texts)
    res = Dedup().fit_apply(table)
    removed = np.isin(table.row_ids, res.flagged)
    # the last "" is an exact copy of the first; the empty-looking ones are not near copies
    assert removed.tolist() == [False, False, False, False, False, True, True]
    assert res.report["rows_without_text"] == 5


def test_many_identical_copies_are_one_cluster():
    texts, _ = documents(100, (40, 60), seed=5, copies=0, edits=0)
    copies = [texts[7]] * 80 + [texts[7].upper() + "."] * 20
    table = text_table(texts + copies)
    res = Dedup().fit_apply(table)
    assert sorted(res.flagged.tolist()) == sorted(table.row_ids[100:].tolist())
    assert res.report["largest_cluster"] == 101


def test_corpus_tokenised_in_chunks_gives_the_same_sets(monkeypatch):
    texts, _ = documents(200, (10, 100), seed=6, copies=20, edits=2)
    texts[5] = "numbers 12 and 3.5 count more, b,c\tsplit\nhere"
    whole = minhash.shingles(pd.Series(texts), 1)
    monkeypatch.setattr(minhash, "CHUNK_BYTES", 500)
    chunked = minhash.shingles(pd.Series(texts), 1)
    assert np.array_equal(whole.starts, chunked.starts)
    assert np.array_equal(np.sort(whole.hashes), np.sort(chunked.hashes))
    for ngram in (2, 3):  # the n-gram path agrees with itself across chunks too
        monkeypatch.setattr(minhash, "CHUNK_BYTES", 1 << 24)
        a = minhash.shingles(pd.Series(texts), ngram)
        monkeypatch.setattr(minhash, "CHUNK_BYTES", 500)
        b = minhash.shingles(pd.Series(texts), ngram)
        assert np.array_equal(a.starts, b.starts) and np.array_equal(a.hashes, b.hashes)


def test_word_sets_equal_the_one_gram_path():
    """The default 1-gram sets (deduplicated on word ids) equal the general n-gram path's
    (deduplicated on hashes), digit-holding words weighted included."""
    rng = np.random.default_rng(7)
    alphabet = list("ab cD,.\t\n  É é ß 1 2 _ \u00a0 日本 x-y 7")
    texts = pd.Series(["".join(rng.choice(alphabet, rng.integers(0, 40))) for _ in range(300)] + [None])
    ours = minhash.shingles(texts, 1)
    tokens = minhash.simhash.words(texts)
    hashes, doc, digit = tokens.hashes()[tokens.ids], np.repeat(np.arange(len(texts)), tokens.per_doc), \
        tokens.digits()[tokens.ids]
    feats = [hashes] + [minhash._weighted(hashes[digit], k) for k in (1, 2)]
    docs = np.concatenate([doc, doc[digit], doc[digit]])
    expected = {(d, h) for d, h in zip(docs.tolist(), minhash._kept_bits(np.concatenate(feats)).tolist())}
    got = {(d, h) for d in range(len(texts)) for h in ours.hashes[ours.starts[d]:ours.starts[d + 1]].tolist()}
    assert got == expected and len(ours.hashes) == len(got)


def test_new_split_with_boilerplate_loses_only_copies_of_training_rows():
    """Applied to another split, every row copying a training row goes (the crowded band
    buckets of a shared boilerplate are checked in blocks), and no other row does."""
    texts, source = documents(300, (30, 80), seed=8, copies=40, edits=3, boilerplate=100)
    train = Table.from_frame(pd.DataFrame({"text": texts[:300]}), overrides={"text": {"modality": "text"}})
    fresh, _ = documents(40, (30, 80), seed=9, copies=0, edits=0, boilerplate=0)
    shared = texts[0].split()[:50] + texts[0].split()[-50:]  # the same header and footer
    fresh = [" ".join(shared[:50] + t.split() + shared[50:]) for t in fresh]
    test = Table.from_frame(pd.DataFrame({"text": texts[300:] + fresh}), overrides={"text": {"modality": "text"}},
                            first_id=1000)
    dedup = Dedup()
    dedup.fit(train)
    res = dedup.apply(test)
    assert sorted(res.flagged.tolist()) == list(range(1000, 1040))
    assert res.removed["duplicate_of"].tolist() == source[300:].tolist()


def test_candidates_checked_in_small_blocks_give_the_same_pairs(monkeypatch):
    texts, _ = documents(200, (20, 60), seed=10, copies=60, edits=2, boilerplate=40)
    sets = minhash.shingles(pd.Series(texts), 1)
    sigs = minhash.signatures(sets, 128, 1)
    head = minhash.Shingles(sets.hashes[:sets.starts[150]], sets.starts[:151])
    tail = sets.take(np.arange(150, 260))
    whole = minhash.near_pairs(sets, sigs, 0.8), minhash.nearest_in(tail, sigs[150:], head, sigs[:150], 0.8)
    monkeypatch.setattr(minhash, "_CANDIDATES_AT_ONCE", 7)
    blocks = minhash.near_pairs(sets, sigs, 0.8), minhash.nearest_in(tail, sigs[150:], head, sigs[:150], 0.8)
    for a, b in zip([*whole[0], *whole[1]], [*blocks[0], *blocks[1]]):
        assert np.array_equal(a, b)
    assert len(whole[0][0]) >= 60 and len(whole[1][0]) >= 30
