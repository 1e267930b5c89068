"""Built-in feature transforms (pipeline section ``features:``).

SHAP-based selection, UMAP reduction, feature crosses with a correlation filter, and
recursive elimination with an L1 model. Each is a scikit-learn transformer that also sees
the table's schema; shap, umap-learn and scikit-learn are imported only when one is fitted.
"""

from __future__ import annotations

from forgeline.core import hookimpl

from .cross import Cross
from .l1_rfe import L1Rfe
from .shap_select import ShapSelect
from .umap_reduce import Umap

__all__ = ["Cross", "L1Rfe", "ShapSelect", "Umap"]


@hookimpl
def forgeline_feature_transforms():
    """The four built-in feature transforms."""
    return [ShapSelect, Umap, Cross, L1Rfe]
