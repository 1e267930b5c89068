"""What every built-in cleaner promises: accounting, fit/apply without leakage, pickling,
registration, and one-line errors on bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from forgeline.core import InputError, StageContext, Table
from forgeline.plugins.clean import (Dedup, Impute, LabelConsistency, RobustScale, SigmaOutliers,
                                     forgeline_cleaners)


def mixed_table(n: int = 240, seed: int = 0, shift: float = 0.0, first_id: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({
        "income": rng.normal(50 + shift, 10, n) + 15 * y,
        "debt": rng.lognormal(2, 0.5, n) + shift,
        "city": pd.Series(rng.choice(["north", "south", "east"], n)),
        "comment": [" ".join(rng.choice([f"w{i}" for i in range(500)], 25)) for _ in range(n)],
        "default": y,
    })
    frame.loc[rng.choice(n, 10, replace=False), "income"] = np.nan
    frame.loc[rng.choice(n, 3, replace=False), "debt"] = 1e4
    frame.loc[5, "comment"] = frame.loc[2, "comment"]
    return Table.from_frame(frame, target="default", overrides={"city": {"modality": "categorical"}},
                            first_id=first_id)


def complete_table(seed: int, first_id: int = 0) -> Table:
    """A mixed table with its missing values filled."""
    return Impute().fit_apply(mixed_table(seed=seed, first_id=first_id)).table


CLEANERS = [
    lambda: SigmaOutliers(action="drop"),
    lambda: Impute(),
    lambda: Dedup(max_distance=3),
    lambda: LabelConsistency(action="drop", estimator="random-forest"),
    lambda: RobustScale(),
]
CLEANER_IDS = ["sigma-outliers", "impute", "dedup", "label-consistency", "robust-scale"]


def test_registration_hook_returns_the_five_cleaners():
    classes = forgeline_cleaners()
    assert [c.name for c in classes] == CLEANER_IDS
    for c in classes:
        assert c.summary() and all(f.description for f in c.Params.model_fields.values())


def test_rows_in_equal_rows_out_plus_quarantined_through_the_whole_method():
    table = mixed_table()
    for make in CLEANERS:
        cleaner = make()
        res = cleaner.fit_apply(table, StageContext(seed=0))
        assert len(table) == len(res.table) + len(res.removed), cleaner.name
        assert set(res.table.row_ids).isdisjoint(res.removed.index)
        assert set(res.table.row_ids) | set(res.removed.index) == set(table.row_ids)
        assert res.removed["reason"].notna().all()
        cols = list(table.frame.columns)  # removed rows are kept as they came in
        pd.testing.assert_frame_equal(res.removed[cols], table.frame.loc[res.removed.index, cols])
        assert np.isin(res.flagged, table.row_ids).all()
        table = res.table
    assert len(table) < 240


def test_statistics_come_from_the_training_split_only():
    train = mixed_table(seed=1)
    test = mixed_table(seed=2, shift=1000.0, first_id=10_000)
    sigma = SigmaOutliers(action="clip", columns=["income"]).fit(train)
    clipped = sigma.apply(test).table.frame["income"]
    # test values sit ~1000 above the training mean: every one is clipped to the training bound
    assert np.allclose(clipped.dropna(), train.frame["income"].mean() + 3 * train.frame["income"].std())
    imp = Impute().fit(train)
    filled = imp.apply(test).table.frame
    assert (filled.loc[test.frame["income"].isna(), "income"] == train.frame["income"].median()).all()
    scale = RobustScale(columns=["income"]).fit(train)
    q1, med, q3 = np.nanpercentile(train.frame["income"], [25, 50, 75])
    np.testing.assert_allclose(scale.apply(test).table.frame["income"], (test.frame["income"] - med) / (q3 - q1))
    centre = sigma.centre_.copy()
    sigma.apply(test)  # applying never refits
    assert np.array_equal(centre, sigma.centre_)


def test_label_consistency_applies_its_training_model_to_new_rows():
    train = complete_table(3)
    lc = LabelConsistency(action="flag").fit(train)
    res = lc.apply(complete_table(4, first_id=5000))
    assert res.report["probabilities"] == "model fitted on the training split"
    assert len(res.table) == len(train)


def test_label_consistency_only_flags_held_out_rows_unless_told():
    """Dropping evaluation rows the cleaning model disagrees with would inflate the evaluation."""
    train, held_out = complete_table(3), complete_table(4, first_id=5000)
    flagged = LabelConsistency(action="drop").fit(train).apply(held_out)
    assert flagged.report["action"] == "flag" and len(flagged.flagged) > 0
    assert len(flagged.table) == len(held_out) and flagged.removed.empty
    same = LabelConsistency(action="drop", held_out="same").fit(train).apply(held_out)
    assert same.report["action"] == "drop"
    assert set(same.removed.index) == set(flagged.flagged) == set(same.flagged)


@pytest.mark.parametrize("make", CLEANERS, ids=CLEANER_IDS)
def test_fitted_cleaners_pickle_and_keep_no_training_rows(make):
    train = complete_table(5)
    cleaner = make().fit(train)
    blob = pickle.dumps(cleaner)
    assert train.frame["comment"].iloc[0].encode() not in blob
    again = pickle.loads(blob)
    test = complete_table(6, first_id=9000)
    pd.testing.assert_frame_equal(cleaner.apply(test).table.frame, again.apply(test).table.frame)


# ------------------------------------------------------------------------- bad input

def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_non_numeric_column_where_a_number_is_needed():
    t = mixed_table()
    for cleaner in (SigmaOutliers(columns=["city"]), RobustScale(columns=["comment"])):
        with pytest.raises(InputError) as err:
            cleaner.fit(t)
        msg = one_line(err)
        assert msg.startswith(cleaner.name + ":") and "numeric column is needed" in msg


def test_all_missing_column():
    t = mixed_table()
    frame = t.frame.copy()
    frame["income"] = np.nan
    t = t.with_frame(frame)
    for cleaner in (SigmaOutliers(), Impute(), RobustScale()):
        with pytest.raises(InputError) as err:
            cleaner.fit(t)
        assert "'income' is entirely missing" in one_line(err) and cleaner.name in str(err.value)


def test_missing_target_and_missing_labels():
    t = complete_table(0)
    no_target = Table.from_frame(t.frame.drop(columns="default"))
    with pytest.raises(InputError, match=r"^label-consistency: the table has no target column; set data.target"):
        LabelConsistency().fit(no_target)
    frame = t.frame.copy()
    frame["default"] = frame["default"].astype(float)
    frame.loc[frame.index[:3], "default"] = np.nan
    with pytest.raises(InputError, match=r"target 'default' has 3 missing labels"):
        LabelConsistency().fit(t.with_frame(frame))


def test_empty_table():
    empty = Table.from_frame(mixed_table().frame.iloc[:0], target="default")
    for make in CLEANERS:
        cleaner = make()
        with pytest.raises(InputError) as err:
            cleaner.fit(empty)
        assert one_line(err) == f"{cleaner.name}: the table is empty (0 rows); it needs at least one row"


def test_text_column_that_is_not_text():
    t = mixed_table()
    with pytest.raises(InputError) as err:
        Dedup(columns=["income"]).fit(t)
    assert one_line(err).startswith("dedup: column 'income' has dtype float64, not text")
    with pytest.raises(InputError, match="needs a text column and the table has none"):
        Dedup().fit(Table.from_frame(t.frame[["income", "default"]], target="default"))


def test_unknown_column_and_bad_params():
    with pytest.raises(InputError, match=r"^impute: column 'nope' is not in the table"):
        Impute(columns=["nope"]).fit(mixed_table())
    with pytest.raises(ValueError):
        SigmaOutliers(k=-1)
    with pytest.raises(ValueError):
        RobustScale(quantile_range=(80, 20))


@pytest.mark.parametrize("cls", forgeline_cleaners(), ids=CLEANER_IDS)
def test_conformance_kit(cls):
    from forgeline.registry.conformance import check_component

    check_component(cls)  # raises naming the first failing check
