"""The clean stage: fit a cleaner on the training split, apply it to every split."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..components import Cleaner, CleanResult, Kind
from ..data import Table
from .base import RunState, Splits, Stage, StageEnv


class CleanStage(Stage):
    """Runs one cleaner; quarantines what it removed, saves its fitted state."""

    kind = Kind.CLEANER
    needs = ("splits",)
    gives = ("splits", "fitted")

    def run(self, state: RunState, env: StageEnv) -> dict[str, Any]:
        import pandas as pd

        cleaner: Cleaner = self.build()
        if env.plan.pipeline.data.engine == "dask":
            from .partitions import clean_splits
            from .ranks import FOLLOWER_REPORT, follows_rank_zero

            if follows_rank_zero(env):  # rank 0 cleans, on the cluster
                return dict(FOLLOWER_REPORT)
            return clean_splits(self.id, cleaner, self.provider, state, env)
        ctx, report, results = cleaner.context, {}, {}
        for name, table in state.splits.items():
            out = cleaner.fit_apply(table, ctx) if name == "train" else cleaner.apply(table, ctx)
            problem = out.accounting_problem(table)
            if problem:
                raise RuntimeError(f"cleaner {cleaner.name!r} broke the accounting on the {name} split: "
                                   f"{problem} (every row must be kept or quarantined, with a reason)")
            results[name] = out
            report[name] = {"rows_in": len(table), "rows_out": len(out.table), "removed": len(out.removed),
                            "flagged": len(out.flagged), **quality(cleaner, table, out, state.ground_truth)}
        removed = [r.removed.assign(stage=self.id, split=name) for name, r in results.items() if len(r.removed)]
        stem = f"{self.id}-{cleaner.name}"
        report["quarantine"] = env.folder.quarantine(stem, pd.concat(removed)) if removed else None
        report["details"] = results["train"].report
        report["state"] = env.folder.save_stage(stem, cleaner, self.provider)
        state.fitted.append((self.id, cleaner))
        state.splits = Splits(**{name: r.table for name, r in results.items()})
        return report

    restore = Stage.load_fitted


def quality(cleaner: Cleaner, before: Table, out: CleanResult, truth: Any) -> dict[str, Any]:
    """Detection precision/recall and label-noise rates against the dataset's ground truth."""
    if truth is None:
        return {}
    q: dict[str, Any] = {}
    present = truth.reindex(before.row_ids)
    if cleaner.detects and cleaner.detects in truth.columns:
        faulty = set(present.index[present[cleaner.detects].astype(bool)])
        found = set(np.asarray(out.flagged).tolist())
        hit = len(faulty & found)
        q["detection"] = {"fault": cleaner.detects, "true": len(faulty), "flagged": len(found), "hit": hit,
                          "precision": round(hit / len(found), 4) if found else None,
                          "recall": round(hit / len(faulty), 4) if faulty else None}
    if "label_noise" in truth.columns:
        after = truth.reindex(out.table.row_ids)
        q["label_noise_before"] = round(float(present["label_noise"].mean()), 4) if len(present) else None
        q["label_noise_after"] = round(float(after["label_noise"].mean()), 4) if len(after) else None
    return q
