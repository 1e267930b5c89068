"""Duplicate removal: exact duplicates by row hash, near-duplicate text by SimHash or MinHash LSH."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import Cleaner, CleanResult, InputError, Modality, Params, StageContext, Table

from . import simhash
from ._columns import removed_rows, require_rows, select_columns

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: clusters listed one by one in the report (the counts cover all of them)
REPORTED_CLUSTERS = 20


class DedupParams(Params):
    method: Literal["simhash", "minhash", "exact"] = Field(
        "simhash", description="near-duplicate text by 64-bit SimHash, by MinHash LSH (datasketch), "
        "or exact duplicates only")
    columns: list[str] | None = Field(None, description="text columns compared for near-duplicates "
                                      "(None = every text feature)")
    exact: bool = Field(True, description="also remove rows whose feature and target values are all equal")
    max_distance: int = Field(3, ge=0, le=16, description="simhash: largest Hamming distance (of 64 bits) "
                              "between near-duplicates")
    ngram: int = Field(2, ge=1, le=5, description="simhash/minhash: word n-grams up to this length are "
                       "the features")
    threshold: float = Field(0.8, gt=0, lt=1, description="minhash: Jaccard similarity of near-duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="minhash: permutations per signature")


class Dedup(Cleaner):
    """Removes exact duplicate rows and near-duplicate texts, keeping the lowest row id of each cluster.

    Exact duplicates share a hash of every feature and target value. Near-duplicates of the
    text columns (joined with a space when several) are pairs of 64-bit SimHash fingerprints
    within ``max_distance`` bits, found through a block-permutation index, or pairs that
    datasketch's MinHash LSH finds above a Jaccard ``threshold``. Pairs are joined into
    clusters; the lowest row id of each survives and the rest go to quarantine with the id
    they duplicate. Rows with empty text take part only in exact matching. Duplicates are
    looked for within the table being cleaned; nothing of the training data is kept.
    """

    name = "dedup"
    Params = DedupParams
    modalities = frozenset()  # any: exact matching works on every table; near-duplicates need text (checked in fit)
    detects = "duplicate"

    def fit(self, table: Table, ctx: StageContext | None = None) -> Dedup:
        require_rows(table, self.name)
        self.text_columns_ = self._text_columns(table) if self.params.method != "exact" else []
        return self

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

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        cols = self.text_columns_
        for c in cols:
            if c not in table.frame.columns:
                raise InputError(f"{self.name}: column {c!r} was fitted but is not in this table")
        n = len(table)
        # survivor position of each row: a row removed as an exact copy points at its first copy
        links_i, links_j = [], []
        exact_linked = np.zeros(n, dtype=bool)
        if self.params.exact:
            ei, ej = self._exact_pairs(table)
            links_i.append(ei)
            links_j.append(ej)
            exact_linked[ej] = True
        report: dict[str, Any] = {"method": self.params.method, "rows_in": n}
        if cols and n:
            text = self._joined_text(table.frame, cols)
            ni, nj, has_text = self._near_pairs(text)
            links_i.append(ni)
            links_j.append(nj)
            report["rows_without_text"] = int((~has_text).sum())
        i = np.concatenate(links_i) if links_i else np.empty(0, np.int64)
        j = np.concatenate(links_j) if links_j else np.empty(0, np.int64)
        label = simhash.clusters(n, i, j) if n else np.empty(0, np.int64)
        # lowest row id of each cluster survives
        ids = table.row_ids
        order = np.lexsort((ids, label))
        first = np.r_[True, label[order][1:] != label[order][:-1]]
        survivor_pos = np.empty(n, dtype=np.int64)
        survivor_pos[order] = np.repeat(order[first], np.diff(np.r_[np.flatnonzero(first), n]))
        drop = survivor_pos != np.arange(n)
        kind = np.where(exact_linked, "exact", "near")
        reasons = np.array([f"{k} duplicate of row {sid}" for k, sid in zip(kind[drop], ids[survivor_pos[drop]])],
                           dtype=object)
        all_reasons = np.empty(n, dtype=object)
        all_reasons[drop] = reasons
        removed = removed_rows(table.frame, drop, all_reasons)
        removed["duplicate_of"] = ids[survivor_pos[drop]]
        sizes = np.bincount(label) if n else np.empty(0, np.int64)
        multi = np.flatnonzero(sizes > 1)
        clusters_out = []
        for c in multi[:REPORTED_CLUSTERS]:
            members = np.sort(ids[label == c])
            clusters_out.append({"kept": int(members[0]), "removed": members[1:].tolist()})
        report.update({
            "rows_removed": int(drop.sum()),
            "exact_duplicates_removed": int((drop & exact_linked).sum()),
            "near_duplicates_removed": int((drop & ~exact_linked).sum()),
            "clusters": int(len(multi)), "largest_cluster": int(sizes.max()) if n else 0,
            "cluster_examples": clusters_out,
        })
        return CleanResult(table=table.take_mask(~drop), removed=removed, flagged=ids[drop], report=report)

    @staticmethod
    def _exact_pairs(table: Table) -> tuple[np.ndarray, np.ndarray]:
        """Each row pointing at the first earlier row with the same feature and target values."""
        import pandas as pd

        cols = [c for c in table.schema.features() + ([table.target] if table.target else [])
                if c in table.frame.columns]
        if not cols:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        h = pd.util.hash_pandas_object(table.frame[cols], index=False).to_numpy()
        codes, _ = pd.factorize(h)
        order = np.argsort(codes, kind="stable")
        same = codes[order][1:] == codes[order][:-1]
        return order[:-1][same], order[1:][same]

    @staticmethod
    def _joined_text(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
        if len(cols) == 1:
            return frame[cols[0]]
        return frame[cols].fillna("").astype(str).agg(" ".join, axis=1)

    def _near_pairs(self, text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        if p.method == "simhash":
            fp, has_text = simhash.fingerprints(text, ngram=p.ngram)
            pos = np.flatnonzero(has_text)
            i, j = simhash.near_pairs(fp[pos], p.max_distance)
            return pos[i], pos[j], has_text
        return _minhash_pairs(text, p.threshold, p.num_perm, p.ngram, seed=1)


def _minhash_pairs(text: pd.Series, threshold: float, num_perm: int, ngram: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs from datasketch's MinHash LSH, kept when the estimated Jaccard passes."""
    from datasketch import MinHash, MinHashLSH

    hashes, doc = simhash.tokenize(text)
    n = len(text)
    shingles: list[list[bytes]] = [[] for _ in range(n)]
    for feats, fdoc in simhash.ngram_levels(hashes, doc, ngram):
        starts = np.flatnonzero(np.r_[True, fdoc[1:] != fdoc[:-1]]) if len(fdoc) else np.empty(0, np.int64)
        for d_, chunk in zip(fdoc[starts], np.split(feats, starts[1:])):
            shingles[d_].extend(chunk.tobytes()[k:k + 8] for k in range(0, 8 * len(chunk), 8))
    has_text = np.array([bool(s) for s in shingles])
    pos = np.flatnonzero(has_text)
    sigs = MinHash.bulk([shingles[p] for p in pos], num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for k, sig in enumerate(sigs):
            session.insert(k, sig, check_duplication=False)
    out_i, out_j = [], []
    for k, sig in enumerate(sigs):
        for other in lsh.query(sig):
            if other > k and sig.jaccard(sigs[other]) >= threshold:
                out_i.append(pos[k])
                out_j.append(pos[other])
    return np.asarray(out_i, np.int64), np.asarray(out_j, np.int64), has_text
