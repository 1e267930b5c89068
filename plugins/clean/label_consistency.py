"""Label consistency: out-of-fold predicted probabilities + confident-learning thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from forgeline.core import Cleaner, CleanResult, InputError, Modality, Params, StageContext, Table

from ._columns import no_rows_removed, plain, removed_rows, require_rows, select_columns
from ._partitions import empty_table, require_partition_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from forgeline.core.components import PartitionPlan
    from forgeline.core.partitioned import Partitioned

REVIEW_FILE = "label_review.csv"


@dataclass
class Suspects:
    """Rows whose given label disagrees with a confident prediction."""

    mask: np.ndarray  # bool per row: a suspect label
    suggested: np.ndarray  # class index per row: the suggested label (the given one if not a suspect)
    score: np.ndarray  # margin P(suggested) - P(given); higher = more surely wrong (0 for other rows)


def per_class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's threshold per class: the mean self-confidence of rows given that class."""
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.divide(sums, counts, out=np.full(k, 1.0), where=counts > 0)


def confident_joint(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated confident joint (given class x confident class) in whole rows, and each
    row's confident class (-1: none).

    A row counts in (given, j) when j is its most probable class among those reaching their
    own threshold; each row of the matrix is then rescaled to the number of rows given that
    class (calibration) and rounded keeping that total (largest remainders first).
    """
    k = probs.shape[1]
    above = probs >= thresholds - 1e-6
    has = above.any(axis=1)
    confident = np.where(above, probs, -np.inf).argmax(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[has], confident[has]), 1)
    given = np.bincount(labels, minlength=k)
    joint *= (given / np.maximum(joint.sum(axis=1), 1))[:, None]
    whole = np.floor(joint).astype(np.int64)
    short = np.rint(joint.sum(axis=1)).astype(np.int64) - whole.sum(axis=1)
    for c in np.flatnonzero(short > 0):
        whole[c, np.argsort(whole[c] - joint[c], kind="stable")[:short[c]]] += 1
    return whole, np.where(has, confident, -1)


def estimated_issues(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> int:
    """How many labels are wrong: confident learning's prune-by-noise-rate count.

    Each off-diagonal cell (i, j) of the calibrated confident joint names how many rows given
    i belong to j; the cell claims that many rows given i with the largest p(j) - p(i). The
    estimate is the number of rows claimed by some cell whose most probable class is not the
    given one (the count cleanlab's ``find_label_issues`` flags by default), or the number of
    rows whose confident class is more probable than their label when that is larger.
    """
    joint, confident = confident_joint(labels, probs, thresholds)
    rows = np.arange(len(labels))
    # rows whose confident class beats their label: the uncalibrated off-diagonal, the larger
    # count when the probabilities are sharp (random forest, k-NN)
    beaten = int(((confident >= 0) & (confident != labels) & (probs[rows, np.maximum(confident, 0)] >
                                                              probs[rows, labels])).sum())
    claimed = np.zeros(len(labels), bool)
    for i, j in zip(*np.nonzero(joint)):
        if i == j:
            continue
        rows = np.flatnonzero(labels == i)
        if len(rows) > 1:
            gain = probs[rows, j] - probs[rows, i]
            claimed[rows[np.argsort(-gain, kind="stable")[:joint[i, j]]]] = True
    return max(int((claimed & (probs.argmax(axis=1) != labels)).sum()), beaten)


def find_suspects(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | None = None) -> Suspects:
    """Confident learning (Northcutt et al., JAIR 2021) with one global ranking, in numpy.

    Confident learning estimates *how many* labels are wrong (:func:`estimated_issues`);
    cleanlab then picks them cell by cell of the confident joint, each cell ranking its rows
    by its own pair of classes. Here the estimated number of rows with the lowest margin
    p(given) - max p(other) are the suspects: one ranking over all rows, so a row that is
    wrong against any class competes with every other row. On scikit-learn's classification
    sets with 4-15% flipped labels this finds more of the flips at equal or higher precision
    than cleanlab's default filter on the same probabilities (BENCHMARKS.md).
    """
    n = len(labels)
    t = per_class_thresholds(labels, probs) if thresholds is None else thresholds
    rows = np.arange(n)
    others = probs.copy()
    others[rows, labels] = -np.inf
    best_other = others.argmax(axis=1)
    margin = probs[rows, labels] - others[rows, best_other]
    mask = np.zeros(n, bool)
    count = estimated_issues(labels, probs, t) if n else 0
    mask[np.argsort(margin, kind="stable")[:count]] = True
    return Suspects(mask=mask, suggested=np.where(mask, best_other, labels), score=np.where(mask, -margin, 0.0))


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
    sample_rows: int = Field(200_000, ge=100, description="engine dask: a split of at most this many rows "
                             "is gathered (its input columns and labels only) and judged exactly as on "
                             "pandas; a larger one on a hash sample of about this many rows, its other "
                             "rows by the model fitted on the sample with the sample's thresholds")


class LabelConsistency(Cleaner):
    """Finds suspect labels by cross-validated predictions and confident-learning thresholds.

    On the training split, stratified K-fold ``predict_proba`` of the chosen estimator gives
    every row an out-of-fold class distribution; per-class thresholds (mean self-confidence)
    and confident learning rank the rows whose label disagrees (see :func:`find_suspects`).
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
        verdicts = _Verdicts(narrow.row_ids, np.asarray(result.flagged), result.removed["reason"], changed,
                             self if share < 1 else None, action, seed)
        return PartitionPlan(apply=verdicts, report=report)

    # ------------------------------------------------------------------ results

    def _result(self, table: Table, labels: np.ndarray, probs: np.ndarray, ctx: StageContext | None,
                out_of_fold: bool, action: str) -> CleanResult:
        found = find_suspects(labels, probs, self.thresholds_)
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
            "rows_in": len(table), "suspects": int(found.mask.sum()),
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

    judged: np.ndarray  #: row ids judged on the gathered rows
    flagged: np.ndarray  #: the suspects among them
    reasons: pd.Series  #: reason by row id of the judged rows removed
    labels: pd.Series | None  #: relabel: the new label by row id of the judged rows
    model: LabelConsistency | None  #: judges the other rows (None: every row was judged)
    action: str
    seed: int

    def __call__(self, table: Table) -> CleanResult:
        ids = table.row_ids
        was_judged = np.isin(ids, self.judged)
        drop = np.isin(ids, self.reasons.index.to_numpy())
        frame, report, flagged = table.frame, {}, [ids[np.isin(ids, self.flagged)]]
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
