"""What the per-sample augmenters (text, image, series) share: offline and online modes.

Offline (the default), ``augment`` makes ``copies`` new rows from every training row and the
runner appends them with provenance. Online (``online: true``), the training data loader
calls ``transform_rows`` on each batch's rows, fresh each epoch. Both paths run the same
``_augment_values``, so a row augmented offline or online is drawn the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from forgeline.core import Augmenter, InputError, Params, StageContext, Table
from forgeline.core.data import ARRAY_MODALITIES

class RowParams(Params):
    copies: int = Field(1, ge=1, le=100, description="offline: new rows made from each training row "
                        "(the training split grows copies + 1 times)")
    online: bool = Field(False, description="augment inside the training data loader, fresh each epoch, "
                         "instead of adding rows before training")
    column: str | None = Field(None, description="the column to augment (default: every feature column "
                               "of the augmenter's modality)")


def stage_context(component: Augmenter, ctx: StageContext | None) -> StageContext:
    """The context passed, else the one the runner bound (standalone outside a run)."""
    return component.using(ctx)


class RowAugmenter(Augmenter):
    """Base of the per-sample built-ins: subclasses set ``modalities`` and ``_augment_values``."""

    Params: ClassVar[type[Params]] = RowParams

    @property
    def online(self) -> bool:
        return self.params.online

    def columns(self, table: Table) -> list[str]:
        """The columns to augment; a named column of another modality is an input error."""
        modality = next(iter(self.modalities))
        column = self.params.column
        if column is None:
            found = table.schema.features(self.modalities)
            if not found:
                kinds = ", ".join(sorted({str(c.modality) for c in table.schema.columns})) or "none"
                raise InputError(f"{self.name}: the table has no {modality} feature column to augment "
                                 f"(its columns are {kinds})")
            return found
        if column not in table.schema:
            known = ", ".join(table.schema.features())
            raise InputError(f"{self.name}: column {column!r} is not in the table (features: {known})")
        spec = table.schema[column]
        if spec.modality not in self.modalities:
            raise InputError(f"{self.name}: column {column!r} holds {spec.modality} values; {self.name} "
                             f"augments {modality} columns")
        return [column]

    def augment(self, table: Table, ctx: StageContext | None = None) -> Table:
        """``copies`` new rows per row (index: the source row ids), values augmented."""
        ctx = stage_context(self, ctx)
        positions = np.repeat(np.arange(len(table)), self.params.copies)
        # a stream of its own per augmenter name, so two stages with one seed differ
        rng = np.random.default_rng([ctx.seed, *self.name.encode()])
        return self.transform_rows(table._at(positions), rng)

    def transform_rows(self, table: Table, rng: np.random.Generator) -> Table:
        columns = self.columns(table)
        if not len(table):
            return table
        frame, arrays = table.frame, dict(table.arrays)
        changed = {}
        for column in columns:
            if table.schema[column].modality in ARRAY_MODALITIES:
                arrays[column] = self._augment_values(arrays[column], rng)
            else:
                changed[column] = self._augment_values(frame[column], rng)
        if changed:
            frame = frame.assign(**changed)
        return replace(table, frame=frame, arrays=arrays)

    def _augment_values(self, values: Any, rng: np.random.Generator) -> Any:
        """Augmented values of one column: a pandas Series (text) or a row-aligned array."""
        raise NotImplementedError


def seeds(rng: np.random.Generator, n: int = 1) -> list[int]:
    """Seeds for the libraries that take an int seed (albumentations, tsaug, nlpaug's globals)."""
    return [int(s) for s in rng.integers(0, 2 ** 31 - 1, n)]
