"""dedup on a split other than training: rows that copy a training row (train/test leakage)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from forgeline.core import InputError, Table
from forgeline.plugins.clean import Dedup, simhash

WORDS = ("loan account payment late customer balance credit card monthly income rent salary bank "
         "overdraft savings limit transfer mortgage contract interest fee debt stable job").split() + \
    [f"term{i}" for i in range(300)]

#: per method, settings that join a near copy (case, punctuation, one word of 80 replaced)
METHODS = {"simhash": {"method": "simhash", "max_distance": 10},
           "minhash": {"method": "minhash", "threshold": 0.7}}


def random_docs(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, 80)) for _ in range(n)]


def near_copy(doc: str, rng: np.random.Generator) -> str:
    words = doc.split()
    words[int(rng.integers(0, len(words)))] = "typo"
    return " ".join(words).upper() + "!!"


def frame_of(docs: list[str], rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"comment": docs, "amount": rng.normal(size=len(docs)).round(3),
                         "y": rng.integers(0, 2, len(docs))})


#: first training row id; training rows come shuffled, so table order is not id order
TRAIN_ID = 5000


def split_with_leaks(seed: int = 0):
    """A training table (ids 5000..5199, shuffled) and a test table (ids from 1000) holding
    fresh rows, exact and near copies of training rows, and a near-duplicate pair of its own.

    Returns train, test, {test id: training id it copies} for exact and for near copies,
    and {test id: test id it duplicates} for the pair."""
    rng = np.random.default_rng(seed)
    train_frame = frame_of(random_docs(rng, 200), rng)
    train = Table.from_frame(train_frame, target="y", first_id=TRAIN_ID)
    train = train.take(rng.permutation(train.row_ids))
    fresh = frame_of(random_docs(rng, 30), rng)
    exact_src = [3, 50, 120]
    near_src = [7, 64, 150, 199]
    exact = train_frame.iloc[exact_src]
    near = frame_of([near_copy(train_frame["comment"][s], rng) for s in near_src], rng)
    own_pair = frame_of([near_copy(fresh["comment"][4], rng)], rng)
    frame = pd.concat([fresh, exact, near, own_pair], ignore_index=True)
    test = Table.from_frame(frame, target="y", first_id=1000)
    exact_of = {1030 + k: TRAIN_ID + s for k, s in enumerate(exact_src)}
    near_of = {1033 + k: TRAIN_ID + s for k, s in enumerate(near_src)}
    return train, test, exact_of, near_of, {1037: 1004}


def assert_accounted(table: Table, res) -> None:
    assert len(table) == len(res.table) + len(res.removed)
    assert set(res.table.row_ids).isdisjoint(res.removed.index)
    assert set(res.table.row_ids) | set(res.removed.index) == set(table.row_ids)
    assert sorted(res.flagged) == sorted(res.removed.index)
    assert res.removed["reason"].notna().all()


@pytest.mark.parametrize("method", METHODS)
def test_copies_of_training_rows_are_removed_naming_the_training_row(method):
    train, test, exact_of, near_of, own = split_with_leaks()
    res = Dedup(**METHODS[method]).fit(train).apply(test)
    assert_accounted(test, res)
    assert set(res.flagged) == set(exact_of) | set(near_of) | set(own)
    removed = res.removed
    for row, src in exact_of.items():
        assert removed.loc[row, "reason"] == f"exact duplicate of training row {src}"
        assert removed.loc[row, "duplicate_of"] == src
    measure = "hamming" if method == "simhash" else "jaccard"
    for row, src in near_of.items():
        assert removed.loc[row, "reason"].startswith(f"near duplicate of training row {src} ({measure} ")
        assert removed.loc[row, "duplicate_of"] == src
    # duplicates inside the test table are removed as before: lowest row id survives
    assert removed.loc[1037, "reason"] == "near duplicate of row 1004" and 1004 in res.table.row_ids
    rep = res.report
    assert rep["against_training"] is True and rep["training_rows"] == len(train)
    assert rep["exact_training_duplicates_removed"] == len(exact_of)
    assert rep["near_training_duplicates_removed"] == len(near_of)
    assert rep["near_duplicates_removed"] == 1 and rep["rows_removed"] == len(res.removed)
    assert {e["training_row"] for e in rep["training_duplicate_examples"]} == set(exact_of.values()) | \
        set(near_of.values())


@pytest.mark.parametrize("method", METHODS)
def test_against_training_false_only_looks_inside_the_table(method):
    train, test, _, _, own = split_with_leaks()
    res = Dedup(**METHODS[method], against_training=False).fit(train).apply(test)
    assert_accounted(test, res)
    assert set(res.flagged) == set(own)
    assert res.report["against_training"] is False and "training_duplicates_removed" not in res.report


def test_exact_method_catches_exact_copies_only():
    train, test, exact_of, _, _ = split_with_leaks(seed=1)
    res = Dedup(method="exact").fit(train).apply(test)
    assert_accounted(test, res)
    assert set(res.flagged) == set(exact_of)
    assert res.removed["duplicate_of"].to_dict() == exact_of


@pytest.mark.parametrize("method", METHODS)
def test_training_split_itself_is_cleaned_as_by_fit_apply(method):
    train, _, _, _, _ = split_with_leaks(seed=2)
    rng = np.random.default_rng(5)
    frame = train.frame.copy()
    copy, source = TRAIN_ID + 150, TRAIN_ID + 20
    frame.loc[copy, "comment"] = near_copy(frame.loc[source, "comment"], rng)  # a duplicate inside training
    train = train.with_frame(frame)
    once = Dedup(**METHODS[method]).fit_apply(train)
    assert list(once.flagged) == [copy] and once.removed.loc[copy, "duplicate_of"] == source
    # applied again to the training rows, each is recognised as itself, not as its own copy
    again = Dedup(**METHODS[method]).fit(train).apply(train)
    pd.testing.assert_frame_equal(again.removed, once.removed)
    assert again.report["training_duplicates_removed"] == 0


@pytest.mark.parametrize("method", METHODS)
def test_the_nearest_training_row_is_named(method):
    rng = np.random.default_rng(6)
    docs = random_docs(rng, 50)
    docs[40] = near_copy(docs[10], rng)  # training rows 10 and 40 are near each other
    train = Table.from_frame(frame_of(docs, rng), target="y")
    # the test row has row 40's text (other values differ): nearer to 40 than to 10
    test = Table.from_frame(frame_of([docs[40]], rng), target="y", first_id=100)
    res = Dedup(**METHODS[method]).fit(train).apply(test)
    assert res.removed.loc[100, "duplicate_of"] == 40
    exact_text = "hamming 0" if method == "simhash" else "jaccard 1.00"
    assert res.removed.loc[100, "reason"] == f"near duplicate of training row 40 ({exact_text})"


def test_a_cluster_touching_the_training_split_keeps_none_of_its_rows():
    train, _, _, _, _ = split_with_leaks(seed=3)
    rng = np.random.default_rng(9)
    source = train.frame.loc[TRAIN_ID + 10, "comment"]
    d = 4

    def distance(a: str, b: str) -> int:
        fp, _ = simhash.fingerprints(pd.Series([a, b]))
        return int(np.bitwise_count(fp[0] ^ fp[1]))

    # a chain: row 500 is near training row 10, row 501 is near row 500 but not near row 10
    for _ in range(500):
        first = near_copy(source, rng)
        second = near_copy(first.lower(), rng)
        if distance(first, source) <= d and distance(second, first) <= d < distance(second, source):
            break
    else:
        pytest.fail("no chain of near copies found")
    test = Table.from_frame(frame_of([first, second] + random_docs(rng, 3), rng), target="y", first_id=500)
    res = Dedup(method="simhash", max_distance=d).fit(train).apply(test)
    assert_accounted(test, res)
    assert set(res.flagged) == {500, 501}
    assert res.removed.loc[500, "reason"].startswith(f"near duplicate of training row {TRAIN_ID + 10} (hamming ")
    assert res.removed.loc[501, "reason"] == "near duplicate of row 500"


def test_new_rows_without_the_target_are_matched_on_their_features():
    train, test, exact_of, near_of, own = split_with_leaks(seed=4)
    unlabelled = Table.from_frame(test.frame.drop(columns="y"), first_id=1000)
    res = Dedup(**METHODS["simhash"]).fit(train).apply(unlabelled)
    assert set(res.flagged) == set(exact_of) | set(near_of) | set(own)
    assert res.removed.loc[list(exact_of), "reason"].str.startswith("exact duplicate of training row").all()


def test_a_fitted_feature_missing_from_the_table_is_an_error_unless_matching_is_off():
    train, test, *_ = split_with_leaks()
    cleaner = Dedup(**METHODS["simhash"]).fit(train)
    short = Table.from_frame(test.frame.drop(columns="amount"), target="y", first_id=1000)
    with pytest.raises(InputError) as err:
        cleaner.apply(short)
    assert str(err.value).startswith("dedup: column 'amount' was fitted but is not in this table")
    assert "against_training: false" in str(err.value)
    cleaner.params = cleaner.params.model_copy(update={"against_training": False})
    assert len(cleaner.apply(short).flagged) == 1


@pytest.mark.parametrize("method", METHODS)
def test_fitted_state_pickles_and_holds_fingerprints_not_rows(method):
    train, test, exact_of, near_of, _ = split_with_leaks(seed=5)
    cleaner = Dedup(**METHODS[method]).fit(train)
    blob = pickle.dumps(cleaner)
    for text in train.frame["comment"]:
        assert text.encode() not in blob
    # ids, two row hashes and text positions (8 bytes each) + a SimHash (8) or the hashed word
    # set (8 bytes a distinct word, three for a word with a digit, plus its offset)
    words = np.mean([sum(3 if any(ch.isdigit() for ch in w) else 1 for w in set(t.lower().split()))
                     for t in train.frame["comment"]])
    per_row = 8 * 4 + (8 if method == "simhash" else 8 * words + 8)
    assert len(blob) < 1.2 * per_row * len(train) + 4000  # a row's text alone is ~600 bytes
    again = pickle.loads(blob)
    a, b = cleaner.apply(test), again.apply(test)
    pd.testing.assert_frame_equal(a.removed, b.removed)
    assert set(exact_of) | set(near_of) <= set(b.flagged)


@pytest.mark.parametrize("chunk", [4_000_000, 3], ids=["at-once", "chunked"])
def test_nearest_in_matches_a_pairwise_scan(monkeypatch, chunk):
    monkeypatch.setattr(simhash, "_PAIRS_AT_ONCE", chunk)
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    ref = np.concatenate([ref, ref[:20]])  # repeated fingerprints: the lowest index must win
    query = ref[rng.choice(300, 150)]
    for _ in range(4):
        flip = rng.random(len(query)) < 0.5
        query[flip] ^= np.uint64(1) << rng.integers(0, 64, flip.sum()).astype(np.uint64)
    query = np.concatenate([query, rng.integers(0, 2**63, 50, dtype=np.int64).astype(np.uint64)])
    dist = np.bitwise_count(query[:, None] ^ ref[None, :]).astype(np.int64)
    for d, blocks in ((0, None), (2, None), (4, None), (5, 8)):
        qi, ri, got = simhash.nearest_in(query, ref, d, blocks)
        want_q = np.flatnonzero(dist.min(axis=1) <= d)
        want_r = np.argmin(np.where(dist <= d, dist, 99), axis=1)[want_q]  # nearest, then lowest index
        assert len(want_q) > (5 if d == 0 else 50)  # the cases are not trivial
        np.testing.assert_array_equal(qi, want_q)
        np.testing.assert_array_equal(ri, want_r)
        np.testing.assert_array_equal(got, dist[want_q, want_r])
