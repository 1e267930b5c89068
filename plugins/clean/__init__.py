"""Built-in cleaners (pipeline section ``clean:``): the five stages of forgeline's cleaning method.

Outliers by the 3-sigma rule, missing values by median fill or multiple imputation,
near-duplicates by SimHash, label consistency by cross-validation, robust scaling.
Each module imports pandas/scikit-learn only when a cleaner runs.
"""

from __future__ import annotations

from forgeline.core import hookimpl

from .dedup import Dedup
from .impute import Impute
from .label_consistency import LabelConsistency
from .robust_scale import RobustScale
from .sigma_outliers import SigmaOutliers

__all__ = ["Dedup", "Impute", "LabelConsistency", "RobustScale", "SigmaOutliers"]


@hookimpl
def forgeline_cleaners():
    """The five built-in cleaners, in the order the cleaning method runs them."""
    return [SigmaOutliers, Impute, Dedup, LabelConsistency, RobustScale]
