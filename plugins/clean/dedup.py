"""Duplicate removal: exact duplicates by row hash, near-duplicate text by SimHash or MinHash LSH."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import ROW_ID, Cleaner, CleanResult, InputError, Modality, Params, StageContext, Table

from . import minhash, simhash
from ._columns import lookup_sorted, removed_rows, require_rows, select_columns
from ._partitions import empty_table, require_partition_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from forgeline.core.components import PartitionPlan
    from forgeline.core.partitioned import Partitioned

#: clusters listed one by one in the report (the counts cover all of them)
REPORTED_CLUSTERS = 20


class DedupParams(Params):
    method: Literal["minhash", "simhash", "exact"] = Field(
        "minhash", description="near-duplicate text by MinHash LSH with exact Jaccard verification, by "
        "64-bit SimHash (faster, less precise), or exact duplicates only")
    columns: list[str] | None = Field(None, description="text columns compared for near-duplicates "
                                      "(None = every text feature)")
    exact: bool = Field(True, description="also remove rows whose feature and target values are all equal")
    max_distance: int = Field(3, ge=0, le=16, description="simhash: largest Hamming distance (of 64 bits) "
                              "between near-duplicates")
    ngram: int | None = Field(None, ge=1, le=5, description="word n-grams up to this length are the "
                              "features (None = 1 for minhash: word sets, robust to reordering; 2 for simhash)")
    threshold: float = Field(0.8, gt=0, lt=1, description="minhash: smallest Jaccard similarity of the word "
                             "n-gram sets of near-duplicates (0.8: about one word in ten changed)")
    num_perm: int = Field(128, ge=16, le=1024, description="minhash: permutations per signature")
    against_training: bool = Field(True, description="on any other split (validation, test, new data) also "
                                   "remove rows that are exact or near duplicates of a training row "
                                   "(train/test leakage), naming that row; false = only duplicates within "
                                   "the table")


#: MinHash seed: fitting and applying must draw the same permutations
MINHASH_SEED = 1


@dataclass
class _Prints:
    """Fingerprints of one table's rows, computed once and shared by every comparison."""

    feature_hash: np.ndarray | None  #: uint64 per row over the feature columns (None: no feature)
    row_hash: np.ndarray | None  #: uint64 per row over the features and the target (= feature_hash without one)
    has_text: np.ndarray  #: bool per row: the joined text has a token
    text: np.ndarray | None  #: simhash: uint64 per row; minhash: uint32 signatures (rows with text) x num_perm
    sets: minhash.Shingles | None = None  #: minhash: the n-gram sets of the rows with text


class Dedup(Cleaner):
    """Removes exact duplicate rows and near-duplicate texts, keeping the lowest row id of each cluster.

    Exact duplicates share a hash of every feature and target value. Near-duplicates of the
    text columns (joined with a space when several) are, by default, pairs whose sets of words
    (word n-grams) have a Jaccard similarity of at least ``threshold``: MinHash LSH finds the
    candidates for all rows at once and each candidate pair is checked on its exact sets
    (:mod:`~forgeline.plugins.clean.minhash`); or pairs of 64-bit SimHash fingerprints within
    ``max_distance`` bits, found through a block-permutation index. Pairs are joined into
    clusters; the lowest row id of each survives and the rest go to quarantine with the id
    they duplicate. Rows with empty text take part only in exact matching.

    ``fit`` keeps fingerprints of the training rows, never the rows: their row ids and row
    hashes (8 bytes each; 8 more for a features-only hash when there is a target) plus, per
    row with text, its position (8 bytes) and its 64-bit SimHash (8 bytes) or its set of
    hashed n-grams (8 bytes per distinct n-gram, plus 8): about 40 bytes a training row for
    simhash, about 8 bytes per distinct word for minhash. The training signatures are
    recomputed from the sets on the first apply and kept in memory only.

    ``fit_apply`` on the training split looks for duplicates within it. ``apply`` on any
    other table removes its internal duplicates the same way and, with ``against_training``,
    every row that is an exact copy or a near-duplicate of a training row (train/test
    leakage), naming the nearest training row (lowest id on a tie) in ``reason`` and
    ``duplicate_of``; a cluster of the table's rows that touches the training data keeps
    none of its members. Rows of the applied table that carry a training row's id and its
    exact values are that training row itself and are only compared within the table, so
    applying to the training split gives ``fit_apply``'s result.
    """

    name = "dedup"
    Params = DedupParams
    modalities = frozenset()  # any: exact matching works on every table; near-duplicates need text (checked in fit)
    detects = "duplicate"

    # ----------------------------------------------------------------- fit

    def fit(self, table: Table, ctx: StageContext | None = None) -> Dedup:
        self._fit(table)
        return self

    def fit_apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        """Fit on the training split and remove its duplicates, fingerprinting it only once."""
        prints = self._fit(table)
        return self._clean(table, prints, against_training=False)

    def _fit(self, table: Table) -> _Prints:
        require_rows(table, self.name)
        self.text_columns_ = self._text_columns(table) if self.params.method != "exact" else []
        self.features_, self.target_ = _exact_columns(table)
        return self._fit_prints(table)

    def _fit_prints(self, table: Table, prints: _Prints | None = None) -> _Prints:
        """The training fingerprints of ``table`` with the fitted columns (``prints``: already
        computed with them)."""
        prints = prints if prints is not None else self._prints(table, self.features_, self.target_)
        # training fingerprints in row id order, so the lowest index is the lowest row id
        order = np.argsort(table.row_ids, kind="stable")
        self.train_ids_ = table.row_ids[order]
        self.train_row_hash_ = prints.row_hash[order] if prints.row_hash is not None else None
        self.train_feature_hash_ = (prints.feature_hash[order] if self.target_ and prints.feature_hash is not None
                                    else self.train_row_hash_)
        has_text = prints.has_text[order]
        self.train_text_pos_ = np.flatnonzero(has_text)
        self.train_text_ = None
        self.train_shingle_starts_ = None
        if self.params.method == "simhash":
            self.train_text_ = prints.text[order][has_text]
        elif self.params.method == "minhash":
            # n-gram sets stay in the table's order; train_text_pos_ gives each one's place
            # among the id-sorted training rows
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            self.train_text_pos_ = rank[np.flatnonzero(prints.has_text)]
            self.train_text_ = prints.sets.hashes
            self.train_shingle_starts_ = prints.sets.starts
            self._train_signatures = prints.text
        return prints

    @property
    def ngram(self) -> int:
        """Word n-grams up to this length: the parameter, or the method's default."""
        return self.params.ngram or (1 if self.params.method == "minhash" else 2)

    def __getstate__(self) -> dict[str, Any]:
        # the training signatures are recomputed from the n-gram sets: pickles stay compact
        state = super().__getstate__()
        state.pop("_train_signatures", None)
        state.pop("_distinct", None)
        return state

    def _training_sets(self) -> tuple[minhash.Shingles, np.ndarray]:
        """The training n-gram sets and their signatures (computed once, not saved)."""
        sets = minhash.Shingles(self.train_text_, self.train_shingle_starts_)
        if getattr(self, "_train_signatures", None) is None:
            self._train_signatures = minhash.signatures(sets, self.params.num_perm, MINHASH_SEED)
        return sets, self._train_signatures

    def _text_columns(self, table: Table) -> list[str]:
        import pandas as pd

        cols = select_columns(table, self.params.columns, {Modality.TEXT}, self.name)
        if not cols:
            raise InputError(f"{self.name}: method {self.params.method!r} needs a text column and the "
                             f"table has none; name one in 'columns' or use method: exact")
        for c in cols:
            s = table.frame[c]
            if pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
                raise InputError(f"{self.name}: column {c!r} has dtype {s.dtype}, not text; near-duplicate "
                                 f"search needs a column of strings (or use method: exact)")
        return cols

    def _prints(self, table: Table, features: list[str], target: str | None) -> _Prints:
        feature_hash, row_hash = _row_hashes(table.frame, features, target)
        n = len(table)
        if not self.text_columns_ or not n:
            return _Prints(feature_hash, row_hash, np.zeros(n, bool), None)
        text = self._joined_text(table.frame, self.text_columns_)
        p = self.params
        if p.method == "simhash":
            fp, has_text = simhash.fingerprints(text, ngram=self.ngram)
            return _Prints(feature_hash, row_hash, has_text, fp)
        sets = minhash.shingles(text, self.ngram)
        has_text = sets.sizes > 0
        if not has_text.all():
            sets = sets.take(np.flatnonzero(has_text))
        return _Prints(feature_hash, row_hash, has_text, minhash.signatures(sets, p.num_perm, MINHASH_SEED), sets)

    # ----------------------------------------------------------------- apply

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        cols = self.text_columns_
        for c in cols:
            if c not in table.frame.columns:
                raise InputError(f"{self.name}: column {c!r} was fitted but is not in this table")
        against = self.params.against_training
        if against:
            missing = [c for c in self.features_ if c not in table.frame.columns]
            if missing:
                raise InputError(f"{self.name}: column {missing[0]!r} was fitted but is not in this table; "
                                 f"matching rows against the training split needs every fitted feature "
                                 f"(or set against_training: false)")
        features, target = _exact_columns(table)
        result = self._clean(table, self._prints(table, features, target), against_training=against)
        result.report["against_training"] = against
        return result

    def _clean(self, table: Table, prints: _Prints, against_training: bool) -> CleanResult:
        n = len(table)
        ids = table.row_ids
        # survivor position of each row: a row removed as an exact copy points at its first copy
        links_i, links_j = [], []
        exact_linked = np.zeros(n, dtype=bool)
        if self.params.exact and prints.row_hash is not None:
            ei, ej = _exact_pairs(prints.row_hash)
            links_i.append(ei)
            links_j.append(ej)
            exact_linked[ej] = True
        report: dict[str, Any] = {"method": self.params.method, "rows_in": n}
        asked = None  # rows compared with the training split
        if against_training:
            probe, reference = self._training_hashes(table, prints)
            asked = ~self._training_rows_themselves(ids, probe, reference)
        near_training = None
        if self.text_columns_ and n:
            ni, nj, near_training = self._near_matches(prints, asked)
            links_i.append(ni)
            links_j.append(nj)
            report["rows_without_text"] = int((~prints.has_text).sum())
        i = np.concatenate(links_i) if links_i else np.empty(0, np.int64)
        j = np.concatenate(links_j) if links_j else np.empty(0, np.int64)
        label = simhash.clusters(n, i, j) if n else np.empty(0, np.int64)
        # lowest row id of each cluster survives
        order = np.lexsort((ids, label))
        first = np.r_[True, label[order][1:] != label[order][:-1]] if n else np.empty(0, bool)
        survivor_pos = np.empty(n, dtype=np.int64)
        survivor_pos[order] = np.repeat(order[first], np.diff(np.r_[np.flatnonzero(first), n]))
        drop = survivor_pos != np.arange(n)
        kind = np.where(exact_linked, "exact", "near")
        all_reasons = np.empty(n, dtype=object)
        all_reasons[drop] = [f"{k} duplicate of row {sid}" for k, sid in zip(kind[drop], ids[survivor_pos[drop]])]
        duplicate_of = ids[survivor_pos]
        drop_within = drop
        if against_training:
            # a row copying a training row goes whatever its cluster inside the table; its
            # reason names the training row (it may also have been the survivor of its cluster)
            leak = self._training_matches(probe, reference, asked, near_training)
            all_reasons[leak.rows] = leak.reasons
            duplicate_of[leak.rows] = leak.training_ids
            hit = np.zeros(n, bool)
            hit[leak.rows] = True
            drop_within = drop & ~hit
            drop = drop | hit
            report.update(leak.report(ids))
        removed = removed_rows(table.frame, drop, all_reasons)
        removed["duplicate_of"] = duplicate_of[drop]
        sizes = np.bincount(label) if n else np.empty(0, np.int64)
        multi = np.flatnonzero(sizes > 1)
        clusters_out = []
        for c in multi[:REPORTED_CLUSTERS]:
            members = np.sort(ids[label == c])
            clusters_out.append({"kept": int(members[0]), "removed": members[1:].tolist()})
        report.update({
            "rows_removed": int(drop.sum()),
            "exact_duplicates_removed": int((drop_within & exact_linked).sum()),
            "near_duplicates_removed": int((drop_within & ~exact_linked).sum()),
            "clusters": int(len(multi)), "largest_cluster": int(sizes.max()) if n else 0,
            "cluster_examples": clusters_out,
        })
        return CleanResult(table=table.take_mask(~drop), removed=removed, flagged=ids[drop], report=report)

    # ----------------------------------------------------------------- engine dask

    def partitions_refusal(self) -> str | None:
        if self.params.method == "simhash":
            return "method simhash has no partitioned search; use method: minhash or exact (or engine: pandas)"
        return None

    def clean_partitions(self, parts: Partitioned, ctx: StageContext | None = None, *,
                         fit: bool = False) -> PartitionPlan:
        """Engine dask: duplicates across partitions. The rows that may have a duplicate in the
        split (the suspects) are found first (:meth:`_exact_suspects`, :meth:`_shared_key_suspects`)
        and deduplicated here exactly as on pandas; the other rows have no duplicate in the
        split and are only checked against the training fingerprints (``against_training``).
        Fitting keeps the training fingerprints of every partition (about 16 bytes per row, and
        8 per distinct word for minhash)."""
        from forgeline.core.components import PartitionPlan

        shape = empty_table(parts)
        if fit:
            require_partition_rows(parts, self.name)
            self.text_columns_ = self._text_columns(shape) if self.params.method != "exact" else []
            self.features_, self.target_ = _exact_columns(shape)
        against = not fit and self.params.against_training
        inner = type(self)(self.params)
        if self.params.method == "exact":
            table, prints = self._exact_suspects(parts, shape, fit, gather=against)
        else:
            table, prints = self._shared_key_suspects(parts, shape, fit), None
        if not len(table):
            result = None
        elif against:
            inner.__dict__.update({k: v for k, v in self.__dict__.items() if k.endswith("_")})
            result = inner.apply(table)
        elif prints is not None:  # exact copies are decided by their hashes alone
            inner.text_columns_ = []
            result = inner._clean(table, prints, against_training=False)
        else:
            result = inner.fit_apply(table)
        report = dict(result.report) if result is not None else {"method": self.params.method}
        report["suspects_gathered"] = len(table)
        decided = result.removed[["reason", "duplicate_of"]].sort_index() if result is not None else None
        return PartitionPlan(apply=_Decided(np.sort(table.row_ids), decided, self if against else None), report=report)

    def _exact_suspects(self, parts: Partitioned, shape: Table, fit: bool, gather: bool
                        ) -> tuple[Table, _Prints | None]:
        """Method exact: every row's id and hashes come back (when fitting, they are the
        training fingerprints kept anyway) and the rows whose hash repeats are the suspects. They
        are returned as ids and hashes, or with ``gather`` as rows, gathered in a second pass
        (to compare them with the training rows). No shuffle: 16 bytes a row sorted here takes
        0.45 s for 40 million hashes, where shuffling them took 7.6 s for 10 million."""
        import pandas as pd

        hashed = self if fit else self._columns_only()
        hashed.features_, hashed.target_ = _exact_columns(shape)
        hashed._merge_fits(parts.reduce(_PartitionFit(hashed)))
        row_hash = hashed.train_row_hash_
        suspect = _repeated(row_hash) if row_hash is not None else np.zeros(len(hashed.train_ids_), bool)
        ids = hashed.train_ids_[suspect]
        if gather:
            found = [t.frame for t in parts.reduce(_WithIds(ids)) if len(t)]
            return (Table(pd.concat(found), shape.schema) if found else shape), None
        narrow = Table(pd.DataFrame(index=pd.Index(ids, name=ROW_ID)), shape.schema)
        feature_hash = hashed.train_feature_hash_
        return narrow, _Prints(feature_hash[suspect] if feature_hash is not None else None,
                               row_hash[suspect] if row_hash is not None else None, np.zeros(len(ids), bool), None)

    def _shared_key_suspects(self, parts: Partitioned, shape: Table, fit: bool) -> Table:
        """Method minhash: every row's exact-row hash and MinHash band keys shuffled by key
        (``value_counts``); the rows sharing a key with another row, gathered (near copies
        that LSH would pair share a band key, wherever they are)."""
        import pandas as pd

        keys = _Keys(self._columns_only(), *_exact_columns(shape))
        shared = _shared_keys(parts, keys)
        found = parts.reduce(_Suspects(keys, shared, _PartitionFit(self) if fit else None))
        if fit:  # the same pass fingerprinted each partition
            self._merge_fits([f for _, f in found])
        suspects = [t.frame for t, _ in found if len(t)]
        return Table(pd.concat(suspects), shape.schema) if suspects else shape

    def _columns_only(self) -> Dedup:
        """This dedup's parameters and fitted columns, without the training fingerprints (what
        computing keys on the workers needs)."""
        light = type(self)(self.params)
        light.text_columns_ = self.text_columns_
        return light

    def _merge_fits(self, fits: list[dict[str, Any]]) -> None:
        """The training fingerprints of the partitions (in row id order) as one fit."""
        rows = np.cumsum([0] + [len(f["train_ids_"]) for f in fits])
        cat = lambda key: np.concatenate([f[key] for f in fits]) if fits[0][key] is not None else None  # noqa: E731
        self.train_ids_, self.train_row_hash_ = cat("train_ids_"), cat("train_row_hash_")
        self.train_feature_hash_ = cat("train_feature_hash_")
        self.train_text_pos_ = np.concatenate([f["train_text_pos_"] + r for f, r in zip(fits, rows)])
        self.train_text_ = cat("train_text_")
        self.train_shingle_starts_ = None
        if self.params.method == "minhash":
            ends = np.cumsum([0] + [f["train_shingle_starts_"][-1] for f in fits])
            self.train_shingle_starts_ = np.concatenate(
                [[0]] + [f["train_shingle_starts_"][1:] + e for f, e in zip(fits, ends)]).astype(np.int64)
        self._train_signatures = None

    # ----------------------------------------------------------------- matching

    def _near_matches(self, prints: _Prints, asked: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Near pairs (i, j) inside the table and, for the rows ``asked`` (None: no training
        comparison), each one's nearest training row: (row positions, training positions,
        Hamming distance or Jaccard similarity)."""
        p = self.params
        pos = np.flatnonzero(prints.has_text)
        against = asked is not None and len(self.train_text_pos_) > 0
        if p.method == "simhash":
            fp = prints.text[pos]
            i, j = simhash.near_pairs(fp, p.max_distance)
            training = None
            if against:
                queried = np.flatnonzero(asked[pos])
                qi, ri, dist = simhash.nearest_in(fp[queried], self.train_text_, p.max_distance)
                training = (pos[queried[qi]], self.train_text_pos_[ri], dist)
            return pos[i], pos[j], training
        i, j = minhash.near_pairs(prints.sets, prints.text, p.threshold)
        if not against:
            return pos[i], pos[j], None
        queried = np.flatnonzero(asked[pos])
        train_sets, train_sigs = self._training_sets()
        qi, ri, sim = minhash.nearest_in(prints.sets.take(queried), prints.text[queried], train_sets, train_sigs,
                                         p.threshold, ref_rank=self.train_text_pos_)
        return pos[i], pos[j], (pos[queried[qi]], self.train_text_pos_[ri], sim)

    def _training_hashes(self, table: Table, prints: _Prints) -> tuple[np.ndarray | None, np.ndarray | None]:
        """This table's row hashes comparable with the stored training ones, and those: over
        the fitted features and target, or the features alone when the table has no target."""
        features, target = _exact_columns(table)
        use_target = self.target_ if self.target_ in table.frame.columns else None
        if features == self.features_ and target == use_target:
            feature_hash, row_hash = prints.feature_hash, prints.row_hash
        else:
            feature_hash, row_hash = _row_hashes(table.frame, self.features_, use_target)
        return (row_hash, self.train_row_hash_) if use_target else (feature_hash, self.train_feature_hash_)

    def _training_rows_themselves(self, ids: np.ndarray, probe: np.ndarray | None,
                                  reference: np.ndarray | None) -> np.ndarray:
        """Rows with a training row's id and its exact values: that row itself, not a copy."""
        same, at = lookup_sorted(self.train_ids_, ids)
        if probe is not None and reference is not None and len(reference):
            same &= probe == reference[at]
        return same

    def _training_matches(self, probe: np.ndarray | None, reference: np.ndarray | None, asked: np.ndarray,
                          near: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> _Leaks:
        """Rows that copy a training row: exact (same row hash) first, else the nearest text."""
        n = len(asked)
        training_pos = np.full(n, -1, np.int64)
        score = np.zeros(n)
        exact = np.zeros(n, bool)
        if near is not None:
            rows, tpos, s = near
            training_pos[rows], score[rows] = tpos, s
        if self.params.exact and probe is not None and reference is not None and len(reference):
            distinct, first = self._distinct_training(reference)
            exact, at = lookup_sorted(distinct, probe)
            exact &= asked
            training_pos[exact] = first[at[exact]]
        rows = np.flatnonzero(training_pos >= 0)
        training_ids = self.train_ids_[training_pos[rows]]
        is_exact = exact[rows]
        measure = "hamming" if self.params.method == "simhash" else "jaccard"
        shown = [f"{s:.0f}" if measure == "hamming" else f"{s:.2f}" for s in score[rows]]
        reasons = [f"exact duplicate of training row {t}" if e else
                   f"near duplicate of training row {t} ({measure} {v})"
                   for t, e, v in zip(training_ids, is_exact, shown)]
        return _Leaks(rows, training_ids, is_exact, score[rows], measure, reasons, len(self.train_ids_))

    def _distinct_training(self, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct training hashes of ``reference`` (sorted) and each one's first position
        (the lowest training row id): sorted once per fitted dedup and kept in memory only, as a
        partition-by-partition apply asks again for every partition."""
        cached = getattr(self, "_distinct", None)
        if cached is None or cached[0] is not reference:
            cached = (reference, *np.unique(reference, return_index=True))
            self._distinct = cached
        return cached[1], cached[2]

    @staticmethod
    def _joined_text(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
        if len(cols) == 1:
            return frame[cols[0]]
        return frame[cols].fillna("").astype(str).agg(" ".join, axis=1)


@dataclass
class _Leaks:
    """Rows of an applied table that copy a training row, and what they copy."""

    rows: np.ndarray  #: positions in the applied table
    training_ids: np.ndarray  #: row id of the training row each copies
    exact: np.ndarray  #: bool: exact copy (else near)
    score: np.ndarray  #: Hamming distance (simhash) or Jaccard similarity (minhash); 0 for exact copies
    measure: str
    reasons: list[str]
    training_rows: int

    def report(self, ids: np.ndarray) -> dict[str, Any]:
        examples = [{"row": int(ids[r]), "training_row": int(t), "kind": "exact" if e else "near",
                     **({} if e else {self.measure: float(s)})}
                    for r, t, e, s in zip(self.rows[:REPORTED_CLUSTERS], self.training_ids, self.exact, self.score)]
        return {"training_rows": self.training_rows,
                "training_duplicates_removed": len(self.rows),
                "exact_training_duplicates_removed": int(self.exact.sum()),
                "near_training_duplicates_removed": int((~self.exact).sum()),
                "training_duplicate_examples": examples}


def _exact_columns(table: Table) -> tuple[list[str], str | None]:
    """The feature columns and the target compared for exact duplicates."""
    features = [c for c in table.schema.features() if c in table.frame.columns]
    target = table.target if table.target and table.target in table.frame.columns else None
    return features, target


def _row_hashes(frame: pd.DataFrame, features: list[str], target: str | None
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """uint64 per row over the features, and over the features and the target.

    Columns are hashed one by one with pandas' stable ``hash_pandas_object`` and combined in
    order (splitmix64), so the features-only hash of a training row can be compared with a
    new table that lacks the target, at the cost of one extra combination.
    """
    import pandas as pd

    def combined(cols: list[str], start: np.ndarray | None) -> np.ndarray | None:
        h = start
        for c in cols:
            col = pd.util.hash_pandas_object(frame[c], index=False).to_numpy()
            h = col if h is None else simhash.combine(h, col)
        return h

    feature_hash = combined(features, None)
    return feature_hash, (combined([target], feature_hash) if target else feature_hash)


def _repeated(values: np.ndarray) -> np.ndarray:
    """Whether each value occurs more than once: the repeated values found by a sort (numpy
    radix-sorts integers), then looked up in a hash table (``np.isin`` would sort them all
    again, ``duplicated`` hashes every value: both 10-20x slower on 40 million hashes)."""
    import pandas as pd

    s = np.sort(values)
    return pd.Series(values).isin(np.unique(s[1:][s[1:] == s[:-1]])).to_numpy()


def _exact_pairs(row_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row pointing at the first earlier row with the same hash."""
    import pandas as pd

    codes, _ = pd.factorize(row_hash)
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    return order[:-1][same], order[1:][same]


# --------------------------------------------------------------------- engine dask helpers

_FITTED = ("train_ids_", "train_row_hash_", "train_feature_hash_", "train_text_pos_", "train_text_",
           "train_shingle_starts_")


@dataclass(frozen=True)
class _PartitionFit:
    """One partition's training fingerprints (merged by ``Dedup._merge_fits``)."""

    dedup: Dedup

    def __call__(self, table: Table, prints: _Prints | None = None) -> dict[str, Any]:
        part = type(self.dedup)(self.dedup.params)
        part.text_columns_ = self.dedup.text_columns_
        if len(table):
            part.features_, part.target_ = self.dedup.features_, self.dedup.target_
            part._fit_prints(table, prints)
            return {k: getattr(part, k) for k in _FITTED}
        none = np.empty(0, np.int64)
        return {"train_ids_": none, "train_row_hash_": none.astype(np.uint64),
                "train_feature_hash_": none.astype(np.uint64), "train_text_pos_": none,
                "train_text_": none.astype(np.uint64), "train_shingle_starts_": np.zeros(1, np.int64)}


@dataclass(frozen=True)
class _Keys:
    """Per row of a partition: its exact-row hash (when exact matching) and MinHash band keys."""

    dedup: Dedup
    features: list[str]
    target: str | None

    def prints(self, table: Table) -> _Prints:
        return self.dedup._prints(table, self.features, self.target)

    def __call__(self, table: Table, prints: _Prints | None = None) -> pd.DataFrame:
        import pandas as pd

        prints = prints if prints is not None else self.prints(table)
        ids = table.row_ids
        frames = []
        if self.dedup.params.exact and prints.row_hash is not None:
            frames.append(pd.DataFrame({"key": prints.row_hash, ROW_ID: ids}))
        if self.dedup.text_columns_ and prints.text is not None and len(prints.text):
            bands, rows = minhash.choose_bands(prints.text.shape[1], self.dedup.params.threshold)
            # band keys already hash the band number in; tagged apart from the row hashes (a
            # collision only gathers a row more, whose duplicates are then checked exactly)
            keys = simhash.combine(minhash.band_keys(prints.text, bands, rows).ravel(), np.uint64(1))
            frames.append(pd.DataFrame({"key": keys, ROW_ID: np.repeat(ids[prints.has_text], bands)}))
        empty = pd.DataFrame({"key": np.empty(0, np.uint64), ROW_ID: np.empty(0, np.int64)})
        return pd.concat(frames, ignore_index=True) if frames else empty


def _shared_keys(parts: Partitioned, keys: _Keys) -> np.ndarray:
    """The keys (sorted) held by two rows or more of the split: the keys shuffled and counted."""
    import dask
    import dask.dataframe as dd

    shared = dask.delayed(keys, pure=True)  # the fitted dedup once in the graph
    frames = [dask.delayed(_keys_of)(p, parts.schema, shared) for p in parts.frame.to_delayed()]
    meta = keys(empty_table(parts))
    table = dd.from_delayed(frames, meta=meta, verify_meta=False)
    counts = table["key"].value_counts(split_out=max(1, parts.npartitions // 2))
    shared = counts[counts > 1].compute()  # filtered on the workers: only the shared keys travel
    return np.sort(shared.index.to_numpy(np.uint64))


def _keys_of(frame: pd.DataFrame, schema: Any, keys: _Keys) -> pd.DataFrame:
    frame.index.name = ROW_ID
    return keys(Table(frame, schema))


@dataclass(frozen=True)
class _Suspects:
    """The rows of a partition that share a key with another row of the split (and, when
    fitting, the partition's training fingerprints)."""

    keys: _Keys
    shared: np.ndarray
    fit: _PartitionFit | None  #: also fingerprint the partition (fitting)

    def __call__(self, table: Table) -> tuple[Table, dict[str, Any] | None]:
        prints = self.keys.prints(table)  # hashes and signatures once, for the keys and the fit
        k = self.keys(table, prints)
        hit, _ = lookup_sorted(self.shared, k["key"].to_numpy(np.uint64))
        suspects = table.take(np.unique(k[ROW_ID].to_numpy()[hit]))
        return suspects, (self.fit(table, prints) if self.fit is not None else None)


@dataclass(frozen=True)
class _WithIds:
    """The rows of a partition with these row ids (sorted)."""

    ids: np.ndarray

    def __call__(self, table: Table) -> Table:
        return table.take_mask(lookup_sorted(self.ids, table.row_ids)[0])


@dataclass
class _Decided:
    """Cleans one partition: the suspects as decided on the gathered rows; the other rows
    checked against the training fingerprints by ``against`` (None: kept)."""

    suspects: np.ndarray  #: row ids, sorted
    removed: pd.DataFrame | None  #: reason and duplicate_of by row id, sorted (the suspects removed)
    against: Dedup | None

    def __call__(self, table: Table) -> CleanResult:
        import pandas as pd

        ids = table.row_ids
        is_suspect, _ = lookup_sorted(self.suspects, ids)
        if self.removed is not None:  # sorted by row id: a binary search, no hash table of them all per worker
            hit, at = lookup_sorted(self.removed.index.to_numpy(), ids)
            gone = self.removed.iloc[at[hit]]
        else:
            gone = pd.DataFrame({"reason": [], "duplicate_of": []})
        report: dict[str, Any] = {"rows_in": int((~is_suspect).sum())}
        leaks = None
        if self.against is not None:
            leaks = self.against.apply(table.take_mask(~is_suspect))
            report = {k: v for k, v in leaks.report.items() if isinstance(v, int) and k not in ("training_rows",
                                                                                            "clusters",
                                                                                            "largest_cluster")}
            gone = pd.concat([gone, leaks.removed[["reason", "duplicate_of"]]])
        drop = np.isin(ids, gone.index.to_numpy())
        removed = removed_rows(table.frame, drop, gone["reason"].reindex(ids).to_numpy())
        removed["duplicate_of"] = gone["duplicate_of"].reindex(removed.index).to_numpy(np.int64)
        return CleanResult(table=table.take_mask(~drop), removed=removed, flagged=ids[drop], report=report)
