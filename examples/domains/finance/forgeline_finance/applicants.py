"""``credit-applicants``: synthetic loan applicants with default labels, label noise and drift.

Defaults follow a logistic model of debt-to-income, delinquencies, history length,
employment and purpose; ``label_noise`` flips a share of labels (recorded in
``meta["ground_truth"]["label_noise"]`` so cleaners are scored against it). ``period``
(months after the reference population) with ``drift`` moves the population: incomes fall,
debt and self-employment rise, and the default rate climbs — a new batch to test PSI on.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from forgeline.core import Dataset, Modality, Params, StageContext, Table

from ._context import stage_context

EMPLOYMENT = ["salaried", "self-employed", "contract", "unemployed"]
PURPOSE = ["car", "home", "education", "debt-consolidation", "business"]
HOUSING = ["own", "mortgage", "rent"]
_RISKY = ["missed two payments last year", "recent job change", "collections account reported",
          "income varies month to month", "several new credit lines"]
_SAFE = ["stable employer for many years", "no late payments", "owns property outright",
         "long relationship with the bank", "savings cover six months"]


class CreditApplicants(Dataset):
    """Synthetic credit applicants: income, debt, history, categories, notes, default labels."""

    name = "credit-applicants"
    default_target = "default"
    modalities = frozenset({Modality.NUMERIC, Modality.CATEGORICAL, Modality.TEXT})

    class Params(Params):
        rows: int = Field(2000, ge=20, description="number of applicants")
        default_rate: float = Field(0.12, gt=0, lt=0.5, description="share of defaults at period 0, before noise")
        label_noise: float = Field(0.03, ge=0, lt=0.5, description="share of labels flipped (recorded as ground truth)")
        period: int = Field(0, ge=0, description="months after the reference population (with drift: a later batch)")
        drift: float = Field(0.0, ge=0, description="drift strength per 12 months of period (0: none)")
        seed: int | None = Field(None, description="generator seed (None: the run's seed)")

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        p = self.params
        ctx = stage_context(self, ctx)
        rng = np.random.default_rng([p.seed if p.seed is not None else ctx.seed, p.period])
        shift = p.drift * p.period / 12.0
        cols, logit = _population(rng, p.rows, shift)
        # calibrate the intercept on the undrifted population, so drift raises the default rate
        _, reference = _population(np.random.default_rng(0), 4000, 0.0)
        logit += _intercept(reference, p.default_rate)
        default = (rng.random(p.rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        noisy = rng.random(p.rows) < p.label_noise
        observed = np.where(noisy, 1 - default, default)
        notes = [_note(rng, risky) for risky in (rng.random(p.rows) < 0.25 + 0.5 * default)]
        frame = pd.DataFrame({**cols, "note": notes, "application_month": np.full(p.rows, p.period, dtype=np.int64),
                              "default": observed})
        for name, levels in (("employment", EMPLOYMENT), ("purpose", PURPOSE), ("housing", HOUSING)):
            frame[name] = pd.Categorical(frame[name], levels)
        table = Table.from_frame(frame, target="default", overrides={
            "note": {"modality": "text"}, "application_month": {"role": "time"}})
        table.meta["ground_truth"] = pd.DataFrame({"label_noise": noisy}, index=table.frame.index)
        return table


def _population(rng: np.random.Generator, n: int, shift: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Applicant columns and their default log-odds (before the intercept) at drift ``shift``."""
    employment = rng.choice(EMPLOYMENT, n, p=_shares([0.62, 0.18, 0.14, 0.06], 1, 0.08 * shift))
    purpose = rng.choice(PURPOSE, n, p=[0.25, 0.2, 0.15, 0.3, 0.1])
    housing = rng.choice(HOUSING, n, p=[0.25, 0.4, 0.35])
    age = rng.integers(21, 70, n)
    income = np.round(rng.lognormal(np.log(52_000) - 0.15 * shift, 0.45, n), -2)
    debt = np.round(income * rng.beta(2, 5, n) * (1 + 0.35 * shift) * 1.2, -2)
    history = np.clip(((age - 18) * 12 * rng.uniform(0.3, 1.0, n)).astype(np.int64), 0, None)
    delinquencies = rng.poisson(0.3 + 0.6 * (employment == "unemployed") + 0.2 * shift, n)
    dti = debt / income
    logit = (4.0 * (dti - 0.35) + 0.7 * delinquencies - 0.004 * history
             + 1.2 * (employment == "unemployed") + 0.4 * (employment == "self-employed")
             + 0.5 * (purpose == "business") - 0.3 * (housing == "own") + 0.6 * shift)
    cols = {"age": age, "income": income, "debt": debt, "debt_to_income": np.round(dti, 4),
            "credit_history_months": history, "delinquencies": delinquencies,
            "open_accounts": rng.poisson(4, n) + 1, "employment": employment, "purpose": purpose,
            "housing": housing}
    return cols, logit


def _shares(base: list[float], index: int, extra: float) -> list[float]:
    """``base`` with ``extra`` share moved to ``index`` (drift), renormalised."""
    out = np.asarray(base, dtype=float)
    out[index] += extra
    return list(out / out.sum())


def _intercept(logit: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean default probability at zero drift about ``rate``
    (bisection: the logistic mean is monotone in the intercept)."""
    lo, hi = -20.0, 20.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(logit + mid)))) < rate else (lo, mid)
    return lo


def _note(rng: np.random.Generator, risky: bool) -> str:
    pool = _RISKY if risky else _SAFE
    first, second = rng.choice(len(pool), 2, replace=False)
    return f"Applicant notes: {pool[first]}; {pool[second]}."
