"""forgeline-finance: credit-risk components, registered through the ``forgeline.plugins`` entry point.

- dataset ``credit-applicants``: synthetic applicants with label noise and a drift knob over time;
- augmenter ``smote-defaults``: SMOTE-NC oversampling of the minority class plus numeric noise;
- feature transform ``woe-binning``: weight of evidence per bin, information value per feature,
  PSI against the training distribution and a refit of drifted features (``refresh``);
- CLI ``forgeline models ...``: a SQLite registry of trained model versions.

Nothing heavy is imported here: this module is loaded by ``forgeline --help``.
"""

from __future__ import annotations

from forgeline.core import hookimpl

from .applicants import CreditApplicants
from .smote import SmoteDefaults
from .woe import WoEBinning

__all__ = ["CreditApplicants", "SmoteDefaults", "WoEBinning"]


@hookimpl
def forgeline_datasets():
    return [CreditApplicants]


@hookimpl
def forgeline_augmenters():
    return [SmoteDefaults]


@hookimpl
def forgeline_feature_transforms():
    return [WoEBinning]


@hookimpl
def forgeline_cli_commands():
    from .cli import models

    return [models]
