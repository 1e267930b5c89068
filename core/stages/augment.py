"""The augment stage: new training rows with fresh row ids and recorded provenance."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from ..components import Augmenter, Kind
from .base import RunState, Stage, StageEnv


class AugmentStage(Stage):
    """Runs one augmenter on the training split; batch-level and online augmenters are handed
    to training (the loop mixes batches; the data loader transforms each batch's rows)."""

    kind = Kind.AUGMENTER
    needs = ("splits",)
    gives = ("splits", "training_augmenters")

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        aug: Augmenter = self.build()
        report: dict[str, Any] = {}
        if aug.per_sample and not aug.online:
            splits = state.splits
            new = aug.augment(splits.train, aug.context)
            next_id = int(max(t.row_ids.max() for _, t in splits.items())) + 1
            sources = new.row_ids
            ids = np.arange(next_id, next_id + len(new), dtype=np.int64)
            frame = new.frame.copy()
            frame.index = ids
            frame.index.name = splits.train.frame.index.name
            train = splits.train.append(replace(new, frame=frame))
            env.folder.write_json(f"stages/{self.id}-{aug.name}-provenance.json",
                                  {"row_id": ids, "source_row_id": sources})
            state.splits = replace(splits, train=train)
            report.update(rows_added=len(new), rows_train=len(train))
        if aug.per_batch or aug.online:
            state.training_augmenters.append(aug)
        report.update(per_batch=aug.per_batch, online=aug.online)
        return report

    def restore(self, record: Mapping[str, Any], state: RunState, env: StageEnv) -> None:
        aug: Augmenter = self.build()
        if aug.per_batch or aug.online:
            state.training_augmenters.append(aug)
