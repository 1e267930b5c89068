"""The ``credit`` dataset: a generated credit-risk table with known, injected data faults.

The clean table is drawn first (customers, accounts, a free-text agent comment, and a
``default`` target from a logistic model of the features); then disjoint sets of rows get
one fault each, and ``table.meta["ground_truth"]`` records exactly which:

- ``duplicate``: a near-duplicate copy of another (clean) row, ``duplicate_of`` its row id
  (-1 otherwise): every value copied, the comment lightly edited;
- ``outlier``: one numeric value pushed 6-12 standard deviations above its column's mean
  (``outlier_column`` names it);
- ``missing``: one or two values blanked;
- ``label_noise``: ``default`` flipped; ``true_label`` is every row's real target.

Everything is vectorised except the comment edits of duplicate rows (a few percent of the
rows), so a million rows generate in seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from forgeline.core import Dataset, InputError, Modality, Params, StageContext, Table

from .synthetic import choose, concat, either, to_str_series

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

TARGET = "default"
NUMERIC = ("age", "income", "tenure_months", "credit_limit", "balance", "debt_ratio", "n_late_payments")
CATEGORICAL = ("employment", "home_ownership", "purpose")
COLUMNS = ("age", "income", "employment", "home_ownership", "purpose", "tenure_months", "credit_limit",
           "balance", "debt_ratio", "n_late_payments", "comment", TARGET)
#: continuous columns that get outliers (counts like n_late_payments have natural long tails)
OUTLIER_COLUMNS = ("age", "income", "tenure_months", "credit_limit", "balance", "debt_ratio")
#: columns that may be blanked
MISSABLE = NUMERIC + CATEGORICAL

EMPLOYMENT = {"employed": 0.62, "self-employed": 0.15, "unemployed": 0.07, "retired": 0.11, "student": 0.05}
HOME = {"rent": 0.4, "mortgage": 0.35, "own": 0.2, "other": 0.05}
PURPOSE = {"debt_consolidation": 0.3, "credit_card": 0.2, "home_improvement": 0.14, "car": 0.12,
           "education": 0.07, "medical": 0.07, "business": 0.06, "vacation": 0.04}
# log-odds contributions of the categories to default (unlisted: 0)
EMPLOYMENT_RISK = {"self-employed": 0.25, "unemployed": 0.9, "student": 0.35, "retired": -0.1}
HOME_RISK = {"own": -0.35, "mortgage": -0.15, "other": 0.2}
PURPOSE_RISK = {"business": 0.45, "vacation": 0.35, "medical": 0.25, "debt_consolidation": 0.1,
                "home_improvement": -0.15, "car": -0.1}
# income level by employment: shift of log-income
EMPLOYMENT_INCOME = {"self-employed": 0.1, "unemployed": -0.9, "retired": -0.35, "student": -1.0}

# word lists of the agents' comments; enough slots that unrelated comments rarely come close
AGENTS = ("Customer", "Client", "Applicant", "Borrower", "Account holder", "Caller", "Cardholder", "Member")
ACTIONS = ("called about", "asked about", "requested", "complained about", "emailed regarding",
           "inquired about", "disputed", "wants details on", "was unhappy with", "confirmed",
           "asked us to review", "followed up on")
TOPICS = ("a higher credit limit", "the late fee", "the interest rate", "a payment plan",
          "the annual statement", "a balance transfer", "the minimum payment", "a card replacement",
          "online banking access", "a loan extension", "the overdraft charge", "an address change",
          "autopay setup", "a refund", "a missed payment", "the new terms")
PRODUCTS = ("on the visa card", "on the mortgage", "for the car loan", "on the savings account",
            "for the student loan", "on the credit line", "on the joint account", "for the personal loan")
CHANNELS = ("by phone", "via chat", "at the branch", "through the app", "by email", "in a letter")
TIMES = ("last week", "yesterday", "this morning", "in March", "after the holidays", "two days ago",
         "on Monday", "before the due date", "on Friday", "last month", "over the weekend", "in June")
NOTES = ("Follow-up scheduled", "Documents pending", "Issue resolved on the call", "Escalated to a supervisor",
         "No action needed", "Promised to pay by Friday", "Sent the form by email", "Identity verified",
         "Awaiting proof of income", "Seemed satisfied", "Needs a callback", "Flagged for review",
         "Fee waived as a courtesy", "Advised on budgeting options", "Case closed", "Waiting for the manager")


class CreditParams(Params):
    rows: int = Field(5000, ge=10, description="number of rows (duplicates included)")
    outlier_rate: float = Field(0.02, ge=0, le=0.25, description="share of rows with one numeric value "
                                "pushed far past 3 sigma")
    missing_rate: float = Field(0.03, ge=0, le=0.25, description="share of rows with one or two values blanked")
    duplicate_rate: float = Field(0.03, ge=0, le=0.25, description="share of rows that are near-duplicate "
                                  "copies of another row (comment lightly edited)")
    label_noise: float = Field(0.03, ge=0, le=0.25, description="share of rows whose target is flipped")


def _categorical(rng: np.random.Generator, probs: dict[str, float], n: int) -> np.ndarray:
    """Category codes drawn with the given shares."""
    return rng.choice(len(probs), size=n, p=np.fromiter(probs.values(), float))


def _effect(codes: np.ndarray, levels: dict[str, float], effects: dict[str, float]) -> np.ndarray:
    table = np.array([effects.get(level, 0.0) for level in levels])
    return table[codes]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def mask(rows: np.ndarray, n: int) -> np.ndarray:
    """A boolean array of length ``n``, true at ``rows``."""
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


def lightly_edit(text: str, rng: np.random.Generator) -> str:
    """A near-duplicate of ``text``: one or two small edits (word swap or drop, punctuation, case).

    Written by hand: each edit is a couple of string operations, and no library makes
    "human-like" small edits of a sentence.
    """
    edits = rng.permutation(4)[: 1 + (rng.random() < 0.35)]
    for edit in edits:
        words = text.split(" ")
        if edit == 0 and len(words) > 2:  # swap two neighbouring words
            i = int(rng.integers(0, len(words) - 1))
            words[i], words[i + 1] = words[i + 1], words[i]
            text = " ".join(words)
        elif edit == 1 and len(words) > 4:  # drop a word
            del words[int(rng.integers(1, len(words)))]
            text = " ".join(words)
        elif edit == 2:  # punctuation
            text = text.replace(".", "!", 1) if rng.random() < 0.5 else text.replace(". ", ", ", 1)
        else:  # case
            text = text.lower()
    return text


class Credit(Dataset):
    """Credit-risk table (generated) with injected outliers, missing values, near-duplicates and label noise."""

    name = "credit"
    Params = CreditParams
    default_target = TARGET
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL, Modality.TEXT})

    def counts(self) -> dict[str, int]:
        """How many rows get each fault."""
        p = self.params
        return {"duplicate": round(p.rows * p.duplicate_rate), "outlier": round(p.rows * p.outlier_rate),
                "missing": round(p.rows * p.missing_rate), "label_noise": round(p.rows * p.label_noise)}

    def problems(self) -> list[tuple[str, str]]:
        c = self.counts()
        # faults are disjoint and every duplicate needs its own clean original
        needed = 2 * c["duplicate"] + c["outlier"] + c["missing"] + c["label_noise"]
        if needed > self.params.rows:
            return [("duplicate_rate", f"the fault rates need {needed} distinct rows but rows is "
                                       f"{self.params.rows}; lower the rates (2 x duplicate_rate + the "
                                       "others must stay at most 1)")]
        return []

    def columns(self) -> list[str] | None:
        return list(COLUMNS)

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        found = self.problems()
        if found:
            raise InputError(found[0][1])
        rng = np.random.default_rng(self.using(ctx).seed)
        n = self.params.rows
        values, codes, true_label = self._clean(rng, n)
        comments = self._comments(rng, n)
        truth, comments = self._inject(rng, values, codes, comments, true_label)

        categories = {"employment": EMPLOYMENT, "home_ownership": HOME, "purpose": PURPOSE}
        frame = pd.DataFrame({
            **values,
            **{col: pd.Categorical.from_codes(codes[col], categories=list(levels))
               for col, levels in categories.items()},
            "comment": to_str_series(comments), TARGET: truth.pop("observed_label"),
        })[list(COLUMNS)]
        table = Table.from_frame(frame, TARGET, meta={"task": "classification", "fault_counts": self.counts()})
        table.meta["ground_truth"] = pd.DataFrame(truth, index=table.frame.index.copy())
        return table

    # ----------------------------------------------------------------------- clean data
    def _clean(self, rng: np.random.Generator,
               n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Numeric values, category codes and the target of ``n`` fault-free customers."""
        employment = _categorical(rng, EMPLOYMENT, n)
        home = _categorical(rng, HOME, n)
        purpose = _categorical(rng, PURPOSE, n)
        levels = list(EMPLOYMENT)
        age = np.clip(rng.normal(41, 11, n), 21, 70)
        age = np.where(employment == levels.index("student"), np.clip(rng.normal(23, 3, n), 18, 35), age)
        age = np.where(employment == levels.index("retired"), np.clip(rng.normal(68, 5, n), 58, 90), age)
        age = np.round(age)
        log_income = (np.log(52_000) + _effect(employment, EMPLOYMENT, EMPLOYMENT_INCOME)
                      + 0.01 * np.clip(age - 41, -15, 15) + rng.normal(0, 0.35, n))
        income = np.round(np.exp(log_income), -2)
        tenure = np.minimum(np.round(rng.gamma(2.0, 30.0, n)), (age - 18) * 12)
        # a hidden financial-stress factor makes utilisation, debt and late payments move together
        stress = rng.normal(0, 1, n)
        credit_limit = np.round(income * rng.uniform(0.1, 0.4, n), -2).clip(500)
        utilisation = _sigmoid(-0.4 + 0.8 * stress + rng.normal(0, 0.6, n))
        balance = np.round(credit_limit * utilisation, 2)
        debt_ratio = np.round(0.9 * _sigmoid(-1.1 + 0.5 * stress + rng.normal(0, 0.5, n)), 3)
        late = rng.poisson(np.exp(-1.0 + 0.6 * stress)).astype(float)

        risk = (3.0 * (debt_ratio - 0.27) + 2.0 * (utilisation - 0.42) + 0.45 * late
                - 0.8 * np.log(income / 52_000) - 0.015 * (age - 41) - 0.004 * (tenure - 60)
                + _effect(employment, EMPLOYMENT, EMPLOYMENT_RISK) + _effect(home, HOME, HOME_RISK)
                + _effect(purpose, PURPOSE, PURPOSE_RISK))
        logit = -2.8 + 1.7 * risk  # about 15% defaults, an AUC near 0.8 for a good model
        true_label = (rng.random(n) < _sigmoid(logit)).astype(np.int64)
        values = {"age": age, "income": income, "tenure_months": tenure, "credit_limit": credit_limit,
                  "balance": balance, "debt_ratio": debt_ratio, "n_late_payments": late}
        codes = {"employment": employment, "home_ownership": home, "purpose": purpose}
        return values, codes, true_label

    @staticmethod
    def _comments(rng: np.random.Generator, n: int) -> pa.StringArray:
        """Agents' notes, e.g. "Client disputed the late fee on the visa card by phone yesterday.
        Case closed. Ref 48213." """
        import pyarrow as pa

        reference = pa.array(rng.integers(10_000, 100_000, n)).cast(pa.string())
        first = concat(choose(rng, AGENTS, n), " ", choose(rng, ACTIONS, n), " ", choose(rng, TOPICS, n),
                       " ", choose(rng, PRODUCTS, n), " ", choose(rng, CHANNELS, n), " ",
                       choose(rng, TIMES, n), ".")
        note = concat(choose(rng, NOTES, n), ".")
        # the note comes first in a third of the comments, so texts do not all share one shape
        body = either(rng.random(n) < 1 / 3, concat(note, " ", first), concat(first, " ", note))
        return concat(body, " Ref ", reference, ".")

    # ----------------------------------------------------------------------- faults
    def _inject(self, rng: np.random.Generator, values: dict[str, np.ndarray], codes: dict[str, np.ndarray],
                comments: pa.StringArray, true_label: np.ndarray) -> tuple[dict[str, np.ndarray], pa.StringArray]:
        """Injects the faults into disjoint rows (``values``, ``codes`` and ``true_label`` in
        place); returns the ground-truth columns and the comments with duplicates edited."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(true_label)
        c = self.counts()
        order = rng.permutation(n)
        bounds = np.cumsum([0, c["duplicate"], c["duplicate"], c["outlier"], c["missing"], c["label_noise"]])
        first, second, outliers, missing, flipped = (order[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
        # a copy is entered after its original (a higher row id), as in real data
        duplicates, originals = np.maximum(first, second), np.minimum(first, second)

        duplicate_of = np.full(n, -1, dtype=np.int64)
        duplicate_of[duplicates] = originals
        for col in values:
            values[col][duplicates] = values[col][originals]
        for col in codes:
            codes[col][duplicates] = codes[col][originals]
        true_label[duplicates] = true_label[originals]
        # replace_with_mask fills the masked rows in row order
        by_row = np.argsort(duplicates)
        edited = [lightly_edit(text, rng) for text in comments.take(pa.array(originals[by_row])).to_pylist()]
        comments = pc.replace_with_mask(comments, pa.array(mask(duplicates, n)), pa.array(edited, pa.string()))

        # outliers: measured against the clean column, so every one is > 6 sigma off
        outlier_column = np.full(n, None, dtype=object)
        which = rng.integers(0, len(OUTLIER_COLUMNS), len(outliers))
        for k, col in enumerate(OUTLIER_COLUMNS):
            rows = outliers[which == k]
            column = values[col]
            mean, std = column.mean(), column.std()
            pushed = mean + rng.uniform(6, 12, len(rows)) * std
            column[rows] = np.round(pushed, 3 if col == "debt_ratio" else 0)
            outlier_column[rows] = col

        # missing: one column per row, a second one for about a third of them
        for extra in (False, True):
            rows = missing[rng.random(len(missing)) < 1 / 3] if extra else missing
            which = rng.integers(0, len(MISSABLE), len(rows))
            for k, col in enumerate(MISSABLE):
                blank = rows[which == k]
                if col in values:
                    values[col][blank] = np.nan
                else:
                    codes[col][blank] = -1  # pandas' code for a missing category

        observed = true_label.copy()
        observed[flipped] = 1 - observed[flipped]

        return {"outlier": mask(outliers, n), "outlier_column": outlier_column, "missing": mask(missing, n),
                "duplicate": mask(duplicates, n), "duplicate_of": duplicate_of, "label_noise": mask(flipped, n),
                "true_label": true_label, "observed_label": observed}, comments
