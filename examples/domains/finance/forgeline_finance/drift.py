"""Dynamic feature updates: PSI of a new batch against a run's fitted feature stages, refit of
the drifted ones, and the new version recorded in the model registry.

Works on any fitted stage list (``Run.stages`` of ``forgeline.core.api.run`` or a reopened run):
cleaners are applied as fitted; a feature stage that offers ``refresh(X, y, threshold)`` (as
``woe-binning`` does) refits its drifted features on the new batch; other transforms apply as
fitted.
"""

from __future__ import annotations

from typing import Any

from forgeline.core import Cleaner, FeatureTransform, Table


def refresh_stages(stages: list[tuple[str, Any]], new: Table, threshold: float | None = None) -> dict[str, Any]:
    """Run ``new`` through ``stages``, refreshing drift-aware feature stages in place.

    Returns ``{"stages": {stage_id: refresh record}, "refit": [stage ids that got a new version],
    "fingerprint": new batch's fingerprint}``.
    """
    records: dict[str, Any] = {}
    fingerprint = new.fingerprint()
    table = new
    for stage_id, comp in stages:
        if isinstance(comp, Cleaner):
            table = comp.apply(table).table
        elif isinstance(comp, FeatureTransform):
            if hasattr(comp, "refresh"):
                records[stage_id] = comp.refresh(table.X, table.y, threshold)
            out = comp.transform(table.X)
            keep = [c for c in table.frame.columns if c not in table.X.columns]
            table = Table(table.frame[keep].join(out), table.schema.without(table.X.columns).with_columns(
                getattr(comp, "output_schema")().columns if hasattr(comp, "output_schema") else ()),
                table.arrays, table.meta)
    return {"stages": records, "refit": [s for s, r in records.items() if r["refit"]], "fingerprint": fingerprint}


def record_refresh(registry: Any, name: str, result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any] | None:
    """Register a new version of ``name`` after a refresh that refit something (None otherwise):
    the base version's pipeline, the new batch's fingerprint and the PSI per feature."""
    if not result["refit"]:
        return None
    psi = {f"psi_{stage}_{col}": v for stage, r in result["stages"].items() for col, v in r["psi"].items()}
    return registry.register(name, metrics={**base["metrics"], **psi},
                             fingerprints={**base["fingerprints"], "refresh_batch": result["fingerprint"]},
                             pipeline=base["pipeline"], run_dir=base["run_dir"],
                             note=f"refresh of version {base['version']}: refit {result['stages']}")
