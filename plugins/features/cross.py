"""``cross``: feature crosses, capped by relevance to the target, then a correlation filter.

Candidates are the products of numeric pairs and the Cartesian crosses of categorical pairs
(a categorical output, values ``"a|b"``). With a target, the ``max_crosses`` most relevant
candidates are kept (|Pearson r| with the target for numbers, the correlation ratio for
categories; or scikit-learn's mutual information on a row sample); without one, the first
``max_crosses`` pairs. Then, among the numeric outputs (inputs and products), every pair
correlated above ``threshold`` loses the member less related to the target.

Written with numpy rather than a library: the candidate products are scored in column
blocks (one matrix product per block), which no feature-engineering library does without
materialising all pairs; a categorical cross is the integer code ``a * n_b + b``.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import Modality, Params, Schema, StageContext

from ._base import FeatureInputError, FeatureStep, numeric_matrix, task_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: bytes of one block of candidate products scored at once
BLOCK_BYTES = 64 * 2**20


class CrossParams(Params):
    numeric: bool = Field(True, description="add products of numeric pairs")
    categorical: bool = Field(True, description="add Cartesian crosses of categorical pairs (categorical output)")
    columns: list[str] | None = Field(None, description="columns to cross (None: every numeric and categorical feature)")
    max_crosses: int = Field(20, ge=0, description="at most this many crosses are produced (the most relevant)")
    threshold: float = Field(0.95, gt=0, le=1, description="numeric outputs correlated above this |r| lose "
                             "the one less related to the target")
    relevance: Literal["correlation", "mutual-info"] = Field(
        "correlation", description="relatedness to the target: |r| / correlation ratio, or mutual information")
    sample: int = Field(20000, ge=100, description="rows sampled to score mutual information (its cost grows "
                        "with the rows)")
    separator: str = Field("_x_", min_length=1, description="joins the two column names of a cross")
    random_state: int | None = Field(None, description="seed of the mutual-information sample (None: the run's seed)")


class Cross(FeatureStep):
    """Add numeric products and categorical crosses of feature pairs, then drop highly correlated ones."""

    name = "cross"
    Params = CrossParams

    def _fit(self, X: pd.DataFrame, y: np.ndarray | None, schema: Schema, ctx: StageContext) -> None:
        p = self.params
        names = [c.name for c in schema.columns]
        pool = names if p.columns is None else p.columns
        unknown = [c for c in pool if c not in names]
        if unknown:
            raise FeatureInputError(f"{self.name}: columns {unknown} are not features (features: {names[:12]})")
        num = [c for c in pool if schema[c].modality == Modality.NUMERIC]
        cat = [c for c in pool if schema[c].modality == Modality.CATEGORICAL]
        seed = self._seed(ctx)
        rows = (np.sort(np.random.default_rng(seed).choice(len(X), p.sample, replace=False))
                if p.relevance == "mutual-info" and len(X) > p.sample else slice(None))
        scorer = _Scorer(p.relevance, y, rows, seed) if y is not None else None

        A = numeric_matrix(X, num, self.name) if num else np.empty((len(X), 0))
        self.levels_ = {c: sorted(X[c].dropna().astype(str).unique().tolist()) for c in cat}
        codes = {c: _codes(X[c], self.levels_[c]) for c in cat}
        candidates: list[tuple[str, str, str, float]] = []  # (kind, a, b, relevance)
        if p.numeric and len(num) > 1:
            pairs = list(combinations(range(len(num)), 2))
            rel = scorer.products(A, pairs) if scorer else np.zeros(len(pairs))
            candidates += [("numeric", num[i], num[j], r) for (i, j), r in zip(pairs, rel)]
        self.redundant_ = []
        if p.categorical and len(cat) > 1:
            for a, b in combinations(cat, 2):
                combo = _combine(codes[a], codes[b], len(self.levels_[b]))
                n_levels = len(np.unique(combo[combo >= 0]))
                if n_levels in (len(np.unique(codes[a][codes[a] >= 0])), len(np.unique(codes[b][codes[b] >= 0]))):
                    self.redundant_.append(self._name(a, b))  # one column determines the other: no new information
                    continue
                candidates.append(("categorical", a, b, scorer.categorical(combo) if scorer else 0.0))
        order = sorted(range(len(candidates)), key=lambda i: -candidates[i][3]) if scorer else range(len(candidates))
        chosen = [candidates[i] for i in order][:p.max_crosses]
        self.n_candidates_ = len(candidates)

        # the correlation filter over the numeric outputs: inputs first, then the chosen products
        products = [(a, b) for kind, a, b, _ in chosen if kind == "numeric"]
        block = np.concatenate([A, _products(A, [(num.index(a), num.index(b)) for a, b in products])], axis=1)
        labels = num + [self._name(a, b) for a, b in products]
        relevance = (np.concatenate([scorer.numeric(A), [r for kind, _, _, r in chosen if kind == "numeric"]])
                     if scorer else None)
        dropped, self.filtered_ = _correlation_filter(block, labels, relevance, p.threshold)

        self.products_ = [[a, b] for a, b in products if self._name(a, b) not in dropped]
        self.crosses_ = {}
        for kind, a, b, _ in chosen:
            if kind == "categorical":
                combo = _combine(codes[a], codes[b], len(self.levels_[b]))
                self.crosses_[self._name(a, b)] = [a, b, np.unique(combo[combo >= 0]).tolist()]
        self.relevance_ = {label: round(float(r), 6) for label, r in zip(labels, relevance)} if scorer else {}
        self.relevance_.update({self._name(a, b): round(float(r), 6) for kind, a, b, r in chosen
                                if kind == "categorical"})
        kept = [str(c) for c in X.columns if str(c) not in dropped]
        added = [self._name(a, b) for kind, a, b, _ in chosen if self._name(a, b) not in dropped]
        clash = set(kept) & set(added)
        if clash:
            raise FeatureInputError(f"{self.name}: cross names {sorted(clash)} are already columns; set another 'separator'")
        self.features_out_ = kept + added
        self.modalities_out_ = [str(schema[c].modality) for c in kept] + [
            str(Modality.CATEGORICAL if n in self.crosses_ else Modality.NUMERIC) for n in added]
        self.needed_columns_ = sorted(set(kept) | {c for pair in self.products_ for c in pair}
                                      | {c for a, b, _ in self.crosses_.values() for c in (a, b)})

    def _name(self, a: str, b: str) -> str:
        return f"{a}{self.params.separator}{b}"

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        blocks = {}
        if self.products_:
            cols = sorted({c for pair in self.products_ for c in pair})
            A = numeric_matrix(X, cols, self.name)
            pairs = [(cols.index(a), cols.index(b)) for a, b in self.products_]
            prods = _products(A, pairs)
            blocks.update({self._name(a, b): prods[:, k] for k, (a, b) in enumerate(self.products_)})
        for name, (a, b, combos) in self.crosses_.items():
            la, lb = self.levels_[a], self.levels_[b]
            combo = _combine(_codes(X[a], la), _codes(X[b], lb), len(lb))
            known = np.asarray(combos, dtype=np.int64)
            pos = np.searchsorted(known, combo).clip(0, max(len(known) - 1, 0))
            found = (combo >= 0) & (known[pos] == combo) if len(known) else np.zeros(len(combo), bool)
            labels = [f"{la[c // len(lb)]}|{lb[c % len(lb)]}" for c in combos]
            blocks[name] = pd.Categorical.from_codes(np.where(found, pos, -1), categories=labels)
        kept = [c for c in self.features_out_ if c not in blocks]
        added = pd.DataFrame(blocks, index=X.index)
        return pd.concat([X[kept], added], axis=1)

    def _report(self) -> dict[str, Any]:
        return {"candidates": self.n_candidates_, "products": [self._name(a, b) for a, b in self.products_],
                "crosses": list(self.crosses_), "redundant_crosses": list(self.redundant_),
                "correlation_filter": self.filtered_, "relevance": self.relevance_}


# --------------------------------------------------------------------------- numpy kernels

def _codes(s: pd.Series, levels: list[str]) -> np.ndarray:
    """Codes of ``s`` among ``levels`` (-1: missing or unseen)."""
    import pandas as pd

    codes = pd.Index(levels).get_indexer(s.astype(str).to_numpy(dtype=object)).astype(np.int64)
    codes[s.isna().to_numpy()] = -1
    return codes


def _combine(a: np.ndarray, b: np.ndarray, n_b: int) -> np.ndarray:
    return np.where((a >= 0) & (b >= 0), a * n_b + b, -1)


def _products(A: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    if not pairs:
        return np.empty((len(A), 0))
    i, j = np.asarray(pairs).T
    return A[:, i] * A[:, j]


def _standardise(M: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance; missing values become 0 (the mean)."""
    mean = np.nanmean(M, axis=0) if len(M) else np.zeros(M.shape[1])
    Z = M - mean
    Z[np.isnan(Z)] = 0.0
    std = np.sqrt((Z * Z).mean(axis=0)) if len(M) else np.ones(M.shape[1])
    Z /= np.where(std > 0, std, 1.0)
    return Z


def _correlation_filter(block: np.ndarray, labels: list[str], relevance: np.ndarray | None,
                        threshold: float) -> tuple[set[str], list[dict[str, Any]]]:
    """Columns to drop so that no kept pair has |r| > threshold, losing the less relevant member
    of each pair (the later one without a target), strongest correlations first."""
    if block.shape[1] < 2:
        return set(), []
    Z = _standardise(block)
    corr = np.abs(Z.T @ Z) / len(Z)
    iu = np.triu_indices(len(labels), 1)
    over = np.flatnonzero(corr[iu] > threshold)
    dropped: set[str] = set()
    log = []
    for k in over[np.argsort(-corr[iu][over], kind="stable")]:
        i, j = iu[0][k], iu[1][k]
        if labels[i] in dropped or labels[j] in dropped:
            continue
        lose, win = (i, j) if relevance is not None and relevance[i] < relevance[j] else (j, i)
        dropped.add(labels[lose])
        log.append({"dropped": labels[lose], "kept": labels[win], "abs_corr": round(float(corr[i, j]), 4)})
    return dropped, log


class _Scorer:
    """Relatedness of candidate columns to the target, on the rows ``rows``."""

    def __init__(self, kind: str, y: np.ndarray, rows: Any, seed: int) -> None:
        self.kind, self.rows, self.seed = kind, rows, seed
        self.task = task_of(y)
        self.y = np.asarray(y)[rows]
        if self.task == "classification":
            classes, codes = np.unique(self.y, return_inverse=True)
            onehot = np.eye(len(classes))[codes]
            target = onehot[:, 1:] if len(classes) == 2 else onehot
        else:
            target = self.y.astype(np.float64)[:, None]
        self.Yz = _standardise(target)

    def numeric(self, M: np.ndarray) -> np.ndarray:
        return self._numeric(M[self.rows])

    def products(self, A: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
        """Relevance of every pair product, scored one memory-bounded block of products at a time."""
        A = A[self.rows]
        step = max(1, BLOCK_BYTES // (8 * max(len(A), 1)))
        return np.concatenate([self._numeric(_products(A, pairs[k:k + step])) for k in range(0, len(pairs), step)])

    def _numeric(self, M: np.ndarray) -> np.ndarray:
        """Relevance of the columns of ``M`` (rows already restricted to the scored ones)."""
        if self.kind == "mutual-info":
            return self._mutual_info(np.where(np.isnan(M), np.nanmedian(M, axis=0), M), False)
        return np.abs(_standardise(M).T @ self.Yz / len(M)).max(axis=1) if M.shape[1] else np.empty(0)

    def categorical(self, codes: np.ndarray) -> float:
        codes = codes[self.rows] + 1  # missing (-1) is a group of its own
        if self.kind == "mutual-info":
            return float(self._mutual_info(codes[:, None].astype(np.float64), True)[0])
        # correlation ratio: with a standardised target, eta^2 = sum_g n_g mean_g^2 / n
        counts = np.bincount(codes).astype(np.float64)
        seen = counts > 0
        sums = np.stack([np.bincount(codes, weights=col, minlength=len(counts)) for col in self.Yz.T], axis=1)
        eta2 = (sums[seen] ** 2 / counts[seen, None]).sum(axis=0) / len(codes)
        return float(np.sqrt(eta2.max()))

    def _mutual_info(self, M: np.ndarray, discrete: bool) -> np.ndarray:
        from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

        fn = mutual_info_classif if self.task == "classification" else mutual_info_regression
        return fn(M, self.y, discrete_features=discrete, random_state=self.seed)
