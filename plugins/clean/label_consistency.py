"""Label consistency: out-of-fold predicted probabilities + confident learning.

Confident learning is written here in numpy rather than called from cleanlab because the
cleaner needs its intermediate pieces: the per-class thresholds fitted on the training split
and reused on held-out splits and on data gathered from partitions, and the calibrated
confident joint that ``widen`` builds on. cleanlab is the reference it is held to: a test
checks that the default flags exactly the rows cleanlab's ``find_label_issues`` flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import Cleaner, CleanResult, InputError, Modality, Params, StageContext, Table

from ._columns import lookup_sorted, no_rows_removed, plain, removed_rows, require_rows, select_columns
from ._partitions import empty_table, require_partition_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from forgeline.core.components import PartitionPlan
    from forgeline.core.partitioned import Partitioned

REVIEW_FILE = "label_review.csv"
#: fuzz of confident learning's comparisons (cleanlab's FLOATING_POINT_COMPARISON)
FUZZ = 1e-6


@dataclass
class Suspects:
    """Rows whose given label is probably wrong."""

    mask: np.ndarray  # bool per row: a suspect label
    suggested: np.ndarray  # class index per row: the most probable other class (the given one if not a suspect)
    score: np.ndarray  # margin P(suggested) - P(given); higher = more surely wrong (0 for other rows)
    widened: int = 0  # suspects added by ``widen`` to confident learning's own


def per_class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's threshold per class: the mean self-confidence of rows given that
    class (2, out of reach, for a class no row is given)."""
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.maximum(np.divide(sums, counts, out=np.full(k, 2.0), where=counts > 0), 2 * FUZZ)


def round_rows(matrix: np.ndarray) -> np.ndarray:
    """Whole numbers keeping each row's (rounded) total: round, then move the rows that are
    short (or over) by one on the entries with the largest (smallest) remainder."""
    out = np.rint(matrix)
    for r in range(len(matrix)):
        diff = int(np.rint(np.rint(matrix[r].sum()) - out[r].sum()))
        step = 1 if diff > 0 else -1
        while diff:
            order = np.argsort(matrix[r] - out[r])[::-step][:abs(diff)]
            out[r, order] += step
            diff = int(np.rint(np.rint(matrix[r].sum()) - out[r].sum()))
    return out.astype(np.int64)


def confident_joint(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Calibrated confident joint C[given, true] in whole rows (Northcutt et al., JAIR 2021).

    A row counts in (given, j) when j is the only class reaching its threshold, or the most
    probable class when several do; each row of the matrix is then rescaled to the number of
    rows given that class (calibration) and rounded keeping that total.
    """
    k = probs.shape[1]
    above = probs >= thresholds - FUZZ
    confident = np.where(above.sum(axis=1) > 1, probs.argmax(axis=1), above.argmax(axis=1))
    has = above.any(axis=1)
    # counted as (true, given) and viewed transposed: the sums then add in cleanlab's order,
    # so ties in the rounding (equal fractions) break the same way and the rows flagged match
    joint = np.zeros((k, k))
    np.add.at(joint, (confident[has], labels[has]), 1)
    joint = joint.T
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    given = np.bincount(labels, minlength=k)
    joint = (joint.T / joint.sum(axis=1) * given).T
    return round_rows(joint / joint.sum() * given.sum())


def noise_rate_issues(labels: np.ndarray, probs: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Confident learning's prune-by-noise-rate filter (cleanlab ``find_label_issues``'s default).

    Each off-diagonal cell (i, j) of the calibrated joint says how many rows given i are
    truly j; it claims that many rows given i with the largest p(j) - p(i). Claimed rows whose
    most probable class is their given one are kept. Every class keeps at least one row.
    """
    k = probs.shape[1]
    keep = joint.astype(np.float64)  # the diagonal (rows kept per class) raised to at least 1
    raised = np.maximum(keep.diagonal(), 1) - keep.diagonal()
    cells = np.maximum(np.count_nonzero(keep, axis=1) - 1, 1)
    keep = np.maximum(keep - (raised / cells)[:, None], 0)
    np.fill_diagonal(keep, np.maximum(joint.diagonal(), 1))
    counts = keep.astype(np.int64)
    mask = np.zeros(len(labels), bool)
    for i in range(k):
        rows = np.flatnonzero(labels == i)
        if len(rows) <= 1:
            continue
        for j in np.flatnonzero(counts[i]):
            if j != i:
                gain = probs[rows, j] - probs[rows, i]
                mask[rows[np.argsort(-gain)[:counts[i, j]]]] = True
    shifted = probs.copy()
    shifted[np.arange(len(labels)), labels] += FUZZ
    return mask & (shifted.argmax(axis=1) != labels)


def wrong_label_posterior(labels: np.ndarray, probs: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Per row, the estimated probability that its given label is wrong.

    With the noise rates of the calibrated joint, P(given i | true j) = C[i, j] / sum_i C[i, j],
    and the model's probabilities standing for P(true j | x), Bayes' rule gives
    P(true j | x, given i) proportional to P(given i | true j) p_j(x): a class the given one is
    rarely confused with weighs little, however probable.
    """
    noise = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1)
    weight = noise[labels] * probs
    total = weight.sum(axis=1)
    right = np.divide(weight[np.arange(len(labels)), labels], total, out=np.ones(len(labels)), where=total > 0)
    return 1.0 - right


def find_suspects(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None,
                  widen: bool = False) -> Suspects:
    """Confident learning (Northcutt et al., JAIR 2021) in numpy.

    The suspects are the rows confident learning's prune-by-noise-rate filter flags: the same
    rows as cleanlab's ``find_label_issues`` with its defaults on the same probabilities.
    ``widen`` adds every other row whose estimated probability of a wrong label
    (:func:`wrong_label_posterior`) is at least the mean of the flagged rows': recall is never
    lower and the rows added are, by that estimate, as likely wrong as the flagged ones on
    average (in the benchmark: more flips found, precision within a few thousandths).
    """
    if len(labels) == 0:
        return Suspects(np.zeros(0, bool), labels.copy(), np.zeros(0))
    rows = np.arange(len(labels))
    others = probs.copy()
    others[rows, labels] = -np.inf
    best_other = others.argmax(axis=1)
    margin = others[rows, best_other] - probs[rows, labels]
    t = per_class_thresholds(labels, probs) if thresholds is None else thresholds
    joint = confident_joint(labels, probs, t)
    mask = noise_rate_issues(labels, probs, joint)
    found = int(mask.sum())
    if widen and found:
        wrong = wrong_label_posterior(labels, probs, joint)
        mask |= wrong >= wrong[mask].mean()
    return Suspects(mask=mask, suggested=np.where(mask, best_other, labels), score=np.where(mask, margin, 0.0),
                    widened=int(mask.sum()) - found)


ESTIMATORS = ("logistic-regression", "random-forest", "hist-gradient-boosting", "knn")


def make_estimator(name: str, seed: int) -> Any:
    """A scikit-learn classifier with settings that work without tuning on tabular data."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "hist-gradient-boosting":  # handles missing values natively
        return HistGradientBoostingClassifier(random_state=seed)
    # the model's own median fill lets it predict on incomplete rows; the data is not changed
    fill = SimpleImputer(strategy="median", keep_empty_features=True)
    if name == "logistic-regression":
        return make_pipeline(fill, StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if name == "random-forest":
        return make_pipeline(fill, RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=-1,
                                                          random_state=seed))
    return make_pipeline(fill, StandardScaler(), KNeighborsClassifier(n_neighbors=10, weights="distance"))


class LabelConsistencyParams(Params):
    folds: int = Field(5, ge=2, le=20, description="stratified K-fold splits for out-of-fold probabilities")
    estimator: Literal["logistic-regression", "random-forest", "hist-gradient-boosting", "knn"] = Field(
        "logistic-regression", description="scikit-learn classifier that predicts the labels")
    action: Literal["flag", "drop", "relabel"] = Field(
        "flag", description="flag: ranked review file only; drop: suspects to quarantine; "
        "relabel: replace suspect labels by the suggested label")
    held_out: Literal["flag", "same"] = Field(
        "flag", description="suspects in data the stage was not fitted on (validation, test, new rows): "
        "flag lists them in the review file and keeps rows and labels, so evaluation is not graded "
        "against the cleaning model's own opinion; same applies 'action' as on the training split")
    columns: list[str] | None = Field(None, description="input features (None = every numeric and "
                                      "categorical feature; categoricals are one-hot encoded)")
    widen: bool = Field(False, description="also flag rows at least as likely mislabelled (by the noise rates "
                        "confident learning estimates) as the average row it flags: more wrong labels found, "
                        "precision about the same")
    sample_rows: int = Field(200_000, ge=100, description="engine dask: a split of at most this many rows "
                             "is gathered (its input columns and labels only) and judged exactly as on "
                             "pandas; a larger one on a hash sample of about this many rows, its other "
                             "rows by the model fitted on the sample with the sample's thresholds")


class LabelConsistency(Cleaner):
    """Finds suspect labels by cross-validated predictions and confident-learning thresholds.

    On the training split, stratified K-fold ``predict_proba`` of the chosen estimator gives
    every row an out-of-fold class distribution; confident learning (per-class thresholds,
    calibrated confident joint, prune by noise rate) picks the rows whose label is wrong (see
    :func:`find_suspects`).
    For other splits the estimator refitted on the whole training split predicts, with the
    training thresholds; by default (``held_out: flag``) suspects there are only listed, since
    dropping or relabelling evaluation rows the model disagrees with would inflate the
    evaluation. The ranked review file ``label_review.csv`` (row id, given label,
    suggested label, score) goes to the stage's artifacts folder: the training split's ranking,
    then one ranked block per split the fitted stage is applied to in the same folder.
    """

    name = "label-consistency"
    Params = LabelConsistencyParams
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL})
    detects = "label_noise"

    # ------------------------------------------------------------------ fitting

    def fit(self, table: Table, ctx: StageContext | None = None) -> LabelConsistency:
        self._fit(table, ctx)
        return self

    def fit_apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        labels, probs = self._fit(table, ctx)
        return self._result(table, labels, probs, ctx, out_of_fold=True, action=self.params.action)

    def apply(self, table: Table, ctx: StageContext | None = None) -> CleanResult:
        labels = self._encode_labels(table)
        probs = self.model_.predict_proba(self._inputs(table, fitting=False))
        action = self.params.action if self.params.held_out == "same" else "flag"
        return self._result(table, labels, probs, ctx, out_of_fold=False, action=action)

    def _fit(self, table: Table, ctx: StageContext | None) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        require_rows(table, self.name)
        target = table.target
        if target is None or target not in table.frame.columns:
            raise InputError(f"{self.name}: the table has no target column; set data.target to the label column")
        y = table.frame[target]
        if y.isna().any():
            raise InputError(f"{self.name}: target {target!r} has {int(y.isna().sum())} missing labels; "
                             f"every row needs a label (drop or fill them before this stage)")
        self.classes_ = np.sort(y.unique())
        if len(self.classes_) < 2:
            raise InputError(f"{self.name}: target {target!r} has a single class; a classification target "
                             f"with at least 2 classes is needed")
        if y.dtype.kind == "f" and len(self.classes_) > 0.5 * len(y):
            raise InputError(f"{self.name}: target {target!r} looks continuous ({len(self.classes_)} distinct "
                             f"values); label-consistency needs a classification target")
        labels = self._encode_labels(table)
        smallest = int(np.bincount(labels).min())
        if smallest < self.params.folds:
            raise InputError(f"{self.name}: target {target!r} has a class with {smallest} rows, fewer than "
                             f"folds={self.params.folds}; lower 'folds' or merge rare classes")
        X = self._inputs(table, fitting=True)
        seed = self.using(ctx).seed
        estimator = make_estimator(self.params.estimator, seed)
        cv = StratifiedKFold(n_splits=self.params.folds, shuffle=True, random_state=seed)
        probs = cross_val_predict(estimator, X, labels, cv=cv, method="predict_proba")
        self.thresholds_ = per_class_thresholds(labels, probs)
        self.model_ = clone(estimator).fit(X, labels)
        return labels, probs

    def _encode_labels(self, table: Table) -> np.ndarray:
        y = table.frame[table.target].to_numpy() if table.target in table.frame.columns else None
        if y is None:
            raise InputError(f"{self.name}: the table has no target column {table.target!r}")
        pos = np.searchsorted(self.classes_, y)
        pos = np.clip(pos, 0, len(self.classes_) - 1)
        unknown = self.classes_[pos] != y
        if unknown.any():
            raise InputError(f"{self.name}: target {table.target!r} has label {y[unknown][0]!r} not seen in "
                             f"training; known labels: {list(self.classes_)[:10]}")
        return pos.astype(np.int64)

    def _inputs(self, table: Table, fitting: bool) -> np.ndarray:
        """Numeric features as they are (missing values are left to the estimator's own fill),
        categorical ones one-hot (levels from training)."""
        import pandas as pd

        if fitting:
            cols = select_columns(table, self.params.columns, self.modalities, self.name)
            if not cols:
                raise InputError(f"{self.name}: no numeric or categorical feature to predict the labels from; "
                                 f"name input columns in 'columns'")
            self.numeric_ = [c for c in cols if table.schema[c].modality == Modality.NUMERIC]
            self.categorical_ = [c for c in cols if c not in set(self.numeric_)]
            self.levels_ = {c: sorted(table.frame[c].dropna().astype(str).unique()) for c in self.categorical_}
        frame = table.frame
        for c in self.numeric_ + self.categorical_:
            if c not in frame.columns:
                raise InputError(f"{self.name}: column {c!r} was fitted but is not in this table")
        for c in self.numeric_:
            if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]):
                raise InputError(f"{self.name}: column {c!r} has dtype {frame[c].dtype}, a numeric column "
                                 f"is needed")
        X = frame[self.numeric_].to_numpy(dtype=np.float64, na_value=np.nan)
        blocks = [X]
        for c in self.categorical_:
            values = frame[c].astype(str).to_numpy()
            blocks.append((values[:, None] == np.asarray(self.levels_[c], dtype=object)[None, :]).astype(np.float64))
        return np.hstack(blocks)

    # ------------------------------------------------------------------ engine dask

    def clean_partitions(self, parts: Partitioned, ctx: StageContext | None = None, *,
                         fit: bool = False) -> PartitionPlan:
        """Engine dask: the input columns and labels of the split (or of a hash sample of
        ``sample_rows`` rows when larger) gathered and judged as on pandas (out of fold when
        fitting); the verdicts then applied partition by partition, and the rows outside the
        sample judged there by the fitted model and thresholds. The report says which."""
        from forgeline.core.components import PartitionPlan
        from forgeline.core.partitioned import Partitioned as Parts

        shape = empty_table(parts)
        rows = require_partition_rows(parts, self.name) if fit else parts.rows()
        if fit:
            cols = select_columns(shape, self.params.columns, self.modalities, self.name)
        else:
            cols = self.numeric_ + self.categorical_
        keep = [c for c in dict.fromkeys([*cols, shape.target]) if c in shape.frame.columns]
        share = min(1.0, self.params.sample_rows / max(rows, 1))
        seed = self.using(ctx).seed
        narrow = Parts(parts.frame[keep], parts.schema).select(_Sample(share, seed)).to_table()
        action = self.params.action if fit or self.params.held_out == "same" else "flag"
        result = self.fit_apply(narrow, ctx) if fit else self.apply(narrow, ctx)
        report = dict(result.report)
        report["judged"] = ("all rows, gathered" if share == 1 else
                            f"a hash sample of {len(narrow)} of {rows} rows gathered; the other rows by the model "
                            f"fitted on the sample, with its thresholds, partition by partition")
        changed = result.table.frame[shape.target] if action == "relabel" else None
        verdicts = _Verdicts(np.sort(narrow.row_ids), np.sort(np.asarray(result.flagged)), result.removed["reason"],
                             changed, self if share < 1 else None, action, seed)
        return PartitionPlan(apply=verdicts, report=report)

    # ------------------------------------------------------------------ results

    def _result(self, table: Table, labels: np.ndarray, probs: np.ndarray, ctx: StageContext | None,
                out_of_fold: bool, action: str) -> CleanResult:
        found = find_suspects(labels, probs, self.thresholds_, widen=self.params.widen)
        ids = table.row_ids
        order = np.flatnonzero(found.mask)[np.argsort(-found.score[found.mask], kind="stable")]
        given, suggested = self.classes_[labels], self.classes_[found.suggested]
        ctx = self.using(ctx)
        if ctx.artifacts is not None:
            self._write_review(ctx, ids[order], given[order], suggested[order], found.score[order],
                               fresh=out_of_fold)
        target = table.target
        removed, kept = no_rows_removed(table.frame), table
        if action == "drop":
            reasons = np.array([f"label {plain(g)!r} suspect, model suggests {plain(s)!r}"
                                for g, s in zip(given, suggested)], dtype=object)
            removed = removed_rows(table.frame, found.mask, reasons)
            kept = table.take_mask(~found.mask)
        elif action == "relabel":
            frame = table.frame.copy()
            new = frame[target].to_numpy(copy=True)
            new[found.mask] = suggested[found.mask]
            frame[target] = new
            kept = table.with_frame(frame)
        report = {
            "action": action, "estimator": self.params.estimator, "folds": self.params.folds,
            "probabilities": "out-of-fold" if out_of_fold else "model fitted on the training split",
            "rows_in": len(table), "suspects": int(found.mask.sum()), "widened": found.widened,
            "rows_removed": len(removed), "rows_relabelled": int(found.mask.sum()) if action == "relabel" else 0,
            "thresholds": {str(c): float(t) for c, t in zip(self.classes_, self.thresholds_)},
            "suspects_per_given_label": {str(c): int(n) for c, n in zip(
                self.classes_, np.bincount(labels[found.mask], minlength=len(self.classes_)))},
            "top_suspects": [{"row_id": int(i), "given": str(g), "suggested": str(s), "score": float(sc)}
                             for i, g, s, sc in zip(ids[order][:10], given[order][:10], suggested[order][:10],
                                                    found.score[order][:10])],
        }
        return CleanResult(table=kept, removed=removed, flagged=ids[found.mask], report=report)

    def _write_review(self, ctx: StageContext, ids: np.ndarray, given: np.ndarray, suggested: np.ndarray,
                      score: np.ndarray, fresh: bool) -> None:
        """The ranked suspects: the training split's starts the file, each later split applied
        in the same run appends its own ranked block (row ids are unique across splits)."""
        import pandas as pd

        ctx.artifacts.mkdir(parents=True, exist_ok=True)
        path = ctx.artifacts / REVIEW_FILE
        append = not fresh and path.exists()
        pd.DataFrame({"row_id": ids, "given_label": given, "suggested_label": suggested, "score": score}).to_csv(
            path, index=False, mode="a" if append else "w", header=not append)


@dataclass(frozen=True)
class _Sample:
    """The rows of a partition in the hash sample of share ``share`` (all when 1)."""

    share: float
    seed: int

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        from forgeline.core.data import hash_split

        if self.share >= 1:
            return frame
        return frame[hash_split(frame.index.to_numpy(), self.share, 0.0, self.seed + 1) == 2]


@dataclass
class _Verdicts:
    """Cleans one partition: the gathered rows as judged, the others (sampled fits) by ``model``."""

    judged: np.ndarray  #: row ids judged on the gathered rows (sorted)
    flagged: np.ndarray  #: the suspects among them (sorted)
    reasons: pd.Series  #: reason by row id of the judged rows removed
    labels: pd.Series | None  #: relabel: the new label by row id of the judged rows
    model: LabelConsistency | None  #: judges the other rows (None: every row was judged)
    action: str
    seed: int

    def __call__(self, table: Table) -> CleanResult:
        ids = table.row_ids
        was_judged = lookup_sorted(self.judged, ids)[0]
        drop = np.isin(ids, self.reasons.index.to_numpy())
        frame, report, flagged = table.frame, {}, [ids[lookup_sorted(self.flagged, ids)[0]]]
        if self.labels is not None:
            frame = frame.copy()
            at = was_judged
            frame.loc[at, self.labels.name] = self.labels.reindex(ids[at]).to_numpy()
        if self.model is not None and (~was_judged).any():
            rest = table.take_mask(~was_judged)
            m = self.model
            labels = m._encode_labels(rest)
            probs = m.model_.predict_proba(m._inputs(rest, fitting=False))
            out = m._result(rest, labels, probs, StageContext(seed=self.seed), out_of_fold=False, action=self.action)
            report = {k: v for k, v in out.report.items() if k in ("rows_in", "suspects", "rows_removed",
                                                                 "rows_relabelled")}
            flagged.append(out.flagged)
            gone = np.isin(ids, out.removed.index.to_numpy())
            reasons = self.reasons.reindex(ids).to_numpy(object, copy=True)
            reasons[gone] = out.removed["reason"].reindex(ids[gone]).to_numpy()
            if self.action == "relabel":
                frame = frame.copy() if frame is table.frame else frame
                frame.loc[~was_judged, out.table.target] = out.table.frame[out.table.target].to_numpy()
            drop = drop | gone
        else:
            reasons = self.reasons.reindex(ids).to_numpy(object, copy=True)
        removed = removed_rows(frame, drop, reasons)
        kept = table.with_frame(frame).take_mask(~drop)
        return CleanResult(table=kept, removed=removed, flagged=np.concatenate(flagged), report=report)
