"""forgeline-finance: the conformance kit and each component's behaviour on generated applicants."""

from __future__ import annotations

import numpy as np
import pytest

from forgeline.registry.conformance import parametrize_with_checks
from forgeline_finance import CreditApplicants, SmoteDefaults, WoEBinning
from forgeline_finance.drift import record_refresh, refresh_stages
from forgeline_finance.registry import ModelRegistry


@parametrize_with_checks([CreditApplicants(rows=200), SmoteDefaults(ratio=1.0), WoEBinning])
def test_conformance(component, check):
    check(component)


@pytest.fixture(scope="module")
def applicants():
    return CreditApplicants(rows=1500, seed=3).load()


def test_applicants_labels_noise_and_drift(applicants):
    later = CreditApplicants(rows=1500, seed=3, period=24, drift=1.0).load()
    assert 0.08 < applicants.y.mean() < 0.2
    assert later.y.mean() > applicants.y.mean() + 0.1  # drift raises defaults
    assert later.frame["income"].median() < applicants.frame["income"].median()
    noise = applicants.meta["ground_truth"]["label_noise"]
    assert 0.01 < noise.mean() < 0.06
    assert applicants.schema["note"].modality == "text" and applicants.schema["application_month"].role == "time"


def test_smote_oversamples_defaults_with_provenance(applicants):
    new = SmoteDefaults(ratio=0.6, noise=0.05).augment(applicants)
    n_def, n_ok = int(applicants.y.sum()), int((applicants.y == 0).sum())
    assert len(new) == int(0.6 * n_ok) - n_def and (new.y == 1).all()
    assert set(new.row_ids) <= set(applicants.row_ids[applicants.y.to_numpy() == 1])  # sources are defaults
    assert set(new.frame["employment"].astype(str)) <= set(applicants.frame["employment"].astype(str))
    assert new.frame["delinquencies"].dtype == applicants.frame["delinquencies"].dtype
    # interpolated, then jittered: no synthetic row copies its source's numbers
    src = applicants.frame.loc[new.row_ids, "income"].to_numpy()
    assert (np.abs(new.frame["income"].to_numpy() - src) > 0).mean() > 0.95


def test_woe_iv_ranks_the_informative_features(applicants):
    woe = WoEBinning(min_iv=0.05).fit(applicants.X, applicants.y, applicants.schema)
    iv = woe.report()["information_value"]
    assert iv["debt_to_income"] > 0.2 and iv["housing"] < 0.05
    out = woe.transform(applicants.X)
    assert "housing_woe" not in out.columns and "debt_to_income_woe" in out.columns and "note" in out.columns
    assert out.index.equals(applicants.X.index)
    # higher debt-to-income -> more defaults -> lower WoE (ln good/bad)
    dti = applicants.X["debt_to_income"]
    assert out["debt_to_income_woe"][dti > dti.quantile(0.9)].mean() < out["debt_to_income_woe"][dti < dti.quantile(0.1)].mean()
    assert [c.name for c in woe.output_schema().columns] == list(woe.get_feature_names_out())


def test_psi_refresh_refits_only_drifted_features_and_registers_a_version(applicants, tmp_path):
    woe = WoEBinning().fit(applicants.X, applicants.y, applicants.schema)
    same = CreditApplicants(rows=1500, seed=4).load()
    assert max(woe.psi(same.X).values()) < 0.1  # same population, new sample: stable
    drifted = CreditApplicants(rows=1500, seed=4, period=24, drift=1.0).load()
    before = dict(woe.woe_["age"])
    result = refresh_stages([("features.0", woe)], drifted)
    record = result["stages"]["features.0"]
    assert "debt_to_income" in record["refit"] and "age" not in record["refit"]
    assert woe.version_ == 2 and woe.woe_["age"] == before and woe.history_[-1] == record
    registry = ModelRegistry(tmp_path / "models.db")
    base = registry.register("credit", metrics={"val_auc": 0.7}, fingerprints={"train": "abc"}, pipeline={"name": "credit"})
    v2 = record_refresh(registry, "credit", result, base)
    assert v2["version"] == 2 and v2["metrics"]["psi_features.0_debt_to_income"] > 0.2
    assert v2["fingerprints"]["refresh_batch"]["sha256"] == drifted.fingerprint()["sha256"]


def test_registry_promote_and_rollback(tmp_path):
    reg = ModelRegistry(tmp_path / "m.db")
    for auc in (0.6, 0.7, 0.8):
        reg.register("credit", metrics={"val_auc": auc}, fingerprints={}, pipeline={})
    reg.promote("credit", 1)
    reg.promote("credit", 3)
    assert reg.production("credit")["version"] == 3
    assert reg.rollback("credit")["version"] == 1
    assert [v["stage"] for v in reg.versions("credit")] == ["production", "staging", "archived"]
