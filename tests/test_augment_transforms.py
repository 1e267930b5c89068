"""The built-in augmenters' contracts: shapes, soft labels summing to one, same seed same output,
the offline thesaurus, and the conformance kit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forgeline.core import DataSpec, StageContext
from forgeline.plugins.augment import CutMix, Image, MixUp, TextEda, TimeSeries
from forgeline.plugins.augment._thesaurus import WordNetThesaurus, find_wordnet
from forgeline.plugins.datasets.sklearn_builtin import Digits
from forgeline.plugins.datasets.synthetic import Reviews, Signals
from forgeline.registry.conformance import check_component

SPEC = DataSpec("classification", 3, (1, 8, 8))


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(16, 1, 8, 8, generator=g), "target": torch.arange(16) % 3}


@pytest.mark.parametrize("aug", [CutMix(), MixUp(), MixUp(cutmix_alpha=1.0)], ids=["cutmix", "mixup", "combined"])
def test_batch_mixing_keeps_shapes_and_gives_soft_targets_summing_to_one(aug):
    batch = _batch()
    outs = [aug.augment_batch(dict(batch), torch.Generator().manual_seed(5), SPEC) for _ in range(2)]
    out = outs[0]
    assert out["x"].shape == batch["x"].shape and out["target"].shape == (16, 3)
    assert torch.allclose(out["target"].sum(1), torch.ones(16))
    assert not torch.equal(out["x"], batch["x"])  # mixed
    assert torch.equal(outs[0]["x"], outs[1]["x"]) and torch.equal(outs[0]["target"], outs[1]["target"])


def test_cutmix_target_weights_are_the_pasted_area():
    x = torch.zeros(2, 1, 8, 8)
    x[1] = 1.0
    batch = {"x": x, "target": torch.tensor([0, 1])}
    for seed in range(10):
        out = CutMix().augment_batch(dict(batch), torch.Generator().manual_seed(seed), DataSpec("classification", 2, (1, 8, 8)))
        pasted = out["x"].mean(dim=(1, 2, 3))  # sample 0: share of ones pasted from sample 1 (or itself)
        for i in range(2):
            share_of_ones = float(pasted[i])
            assert out["target"][i, 1].item() == pytest.approx(share_of_ones, abs=1e-6)


def test_combined_mode_picks_both_and_cutmix_needs_images():
    aug = MixUp(cutmix_alpha=1.0)
    g = torch.Generator().manual_seed(0)
    # CutMix leaves pixels exactly equal to one of the two sources; MixUp blends them
    kinds = set()
    for _ in range(20):
        b = _batch()
        out = aug.augment_batch(dict(b), g, SPEC)["x"]
        kinds.add(bool(torch.isin(out, b["x"]).all()))
    assert kinds == {True, False}
    from forgeline.core import InputError

    with pytest.raises(InputError, match="N x C x H x W"):
        CutMix().augment_batch({"x": torch.rand(4, 5), "target": torch.arange(4) % 2}, g, SPEC)


def test_image_transforms_keep_shapes_and_repeat_under_a_seed():
    table = Digits(as_image=True, scale=True).load().take(np.arange(40))
    aug = Image(transforms=[{"color_jitter": [0.8, 0.8, 0.8, 0.2]}, {"affine": {"translate_percent": 0.1}}], copies=2)
    out = aug.augment(table, StageContext(seed=1))
    assert out.arrays["image"].shape == (80, 1, 8, 8) and out.arrays["image"].dtype == np.float32
    assert list(out.row_ids) == list(np.repeat(table.row_ids, 2))  # provenance: the source row ids
    assert np.array_equal(out.arrays["image"], Image(aug.params).augment(table, StageContext(seed=1)).arrays["image"])
    assert not np.array_equal(out.arrays["image"], aug.augment(table, StageContext(seed=2)).arrays["image"])
    online = aug.transform_rows(table, np.random.default_rng(0))
    assert list(online.row_ids) == list(table.row_ids) and online.arrays["image"].shape == (40, 1, 8, 8)


def test_timeseries_ops_keep_the_length_and_repeat_under_a_seed():
    table = Signals(rows=30, length=64, max_cycles=4).load()
    aug = TimeSeries(crop=1.0, amplitude=1.0, phase=1.0, frequency_mask=1.0)
    out = aug.augment(table, StageContext(seed=4))
    assert out.arrays["series"].shape == (30, 1, 64) and np.isfinite(out.arrays["series"]).all()
    assert np.array_equal(out.arrays["series"], TimeSeries(aug.params).augment(table, StageContext(seed=4)).arrays["series"])
    assert not np.allclose(out.arrays["series"], table.arrays["series"])


def test_frequency_mask_zeroes_a_band_and_phase_keeps_magnitudes():
    from forgeline.plugins.augment.timeseries import _frequency_mask, _phase

    p = TimeSeries().params.model_copy(update={"mask_share": 0.25})
    x = np.random.default_rng(0).normal(size=(3, 2, 64))
    masked = np.fft.rfft(_frequency_mask(x, p, np.random.default_rng(1)), axis=-1)
    assert ((np.abs(masked) < 1e-9).sum(-1) >= 8).all()
    shifted = _phase(x, p, np.random.default_rng(1))
    assert np.allclose(np.abs(np.fft.rfft(shifted, axis=-1)), np.abs(np.fft.rfft(x, axis=-1)))


def test_offline_thesaurus_gives_wordnet_synonyms_and_tags():
    folder, problem = find_wordnet()
    assert problem is None
    wordnet = WordNetThesaurus(folder, ["the"])
    assert "sweet" in wordnet.predict("dulcet") and "enceinte" in wordnet.predict("big") and "glad" in wordnet.predict("happy")
    assert wordnet.pos_tag(["the", "quickly", "dog"]) == [("the", "DT"), ("quickly", "RB"), ("dog", "NN")]


def test_text_eda_changes_documents_and_repeats_under_a_seed():
    table = Reviews(rows=20, sentences=3).load()
    aug = TextEda(synonym_replacement=1.0, random_insertion=1.0, sentence_shuffle=1.0, words=0.2)
    out = aug.augment(table, StageContext(seed=0))
    assert list(out.row_ids) == list(table.row_ids)
    assert (out.frame["text"] != table.frame["text"]).all()
    again = TextEda(aug.params).augment(table, StageContext(seed=0))
    assert out.frame.equals(again.frame)
    # with only sentence shuffle, every sentence survives
    shuffled = TextEda(sentence_shuffle=1.0).augment(table, StageContext(seed=0)).frame["text"]
    for before, after in zip(table.frame["text"], shuffled):
        assert sorted(before.replace(". ", ".|").split("|")) == sorted(after.replace(". ", ".|").split("|"))


def test_text_eda_defaults_and_a_missing_thesaurus(tmp_path):
    p = TextEda().params
    assert (p.synonym_replacement, p.random_insertion, p.random_swap, p.random_deletion, p.sentence_shuffle) == \
        (0.5, 0.5, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="not a WordNet dict folder"):
        TextEda(synonym_replacement=0.3, wordnet=str(tmp_path))
    TextEda(random_swap=0.3, wordnet=str(tmp_path))  # no synonyms asked for: no thesaurus needed


@pytest.mark.parametrize("component", [Image, CutMix, MixUp, TimeSeries, TextEda(random_swap=0.5)],
                         ids=lambda c: getattr(c, "name", type(c).__name__))
def test_augmenters_pass_the_conformance_kit(component):
    skipped = check_component(component)  # raises naming the first failing check
    per_batch = getattr(component, "per_batch", False)
    assert skipped == (["check_augmenter_augment"] if per_batch else ["check_augmenter_batch"])
