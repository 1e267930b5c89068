"""What a run gives back (:class:`Run`) and applying its fitted stages to new data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .components import Cleaner, CleanResult, Component, FeatureTransform
from .data import Schema, Table
from .stages.base import Splits
from .stages.features import transformed

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass
class Run:
    """What a finished run gives back: its folder, manifest, metrics, fitted stages and model."""

    dir: Path | None
    manifest: dict[str, Any]
    splits: Splits
    schema: Schema  # the loaded data's schema: what new data must look like
    stages: list[tuple[str, Component]] = field(default_factory=list)  # (stage id, fitted component)
    model: Any = None  # trained torch module, when the pipeline trains
    model_component: Any = None  # the fitted model component (input encodings)

    @property
    def metrics(self) -> dict[str, float]:
        return self.manifest.get("metrics", {})

    def apply(self, data: Table | pd.DataFrame) -> CleanResult:
        """Clean and transform new data with this run's fitted stages (no refitting)."""
        return apply_stages(self.stages, data, self.schema)


def apply_stages(stages: list[tuple[str, Component]], data: Any, schema: Schema) -> CleanResult:
    """Apply fitted cleaners and feature transforms to new rows; returns kept rows + removed rows."""
    import pandas as pd

    table = data if isinstance(data, Table) else Table.from_frame(
        data, schema=Schema(tuple(c for c in schema.columns if c.name in data.columns)))
    removed, flagged = [], []
    for stage, comp in stages:
        if isinstance(comp, Cleaner):
            res = comp.apply(table)
            table = res.table
            if len(res.removed):
                removed.append(res.removed.assign(stage=stage))
            flagged.append(res.flagged)
        elif isinstance(comp, FeatureTransform):
            table = transformed(table, comp)
    gone = pd.concat(removed) if removed else pd.DataFrame(columns=["reason", "stage"])
    return CleanResult(table, gone, np.concatenate(flagged) if flagged else np.empty(0, np.int64))
