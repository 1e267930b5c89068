"""Runs a validated pipeline: data -> clean -> augment -> features -> train.

(``tune`` wraps train and ``compress`` follows it once their built-ins land; until then a
pipeline that uses them is refused before any work starts.)

Stage state is fitted on the training split and applied to the others. Every stage is
announced to the lifecycle hooks, timed, reported into the manifest (rewritten after each
stage, so a failure keeps what finished) and, for cleaners, checked for the accounting
invariant (rows in = rows kept + rows quarantined). Only rank 0 writes the run folder.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from .catalog import Catalog, Entry
from .components import (Augmenter, Cleaner, CleanResult, Component, DistInfo, FeatureTransform,
                         Kind, Monitor, RunInfo, StageContext, StageInfo)
from .data import ColumnSpec, Modality, Role, Schema, Table
from .datacheck import check_loaded
from .errors import InputError, Problem, StageError
from .runfolder import RunFolder, environment, new_run_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .train import TrainResult
    from .validation import Plan, Resolved

SPLITS = ("train", "valid", "test")


@dataclass
class Splits:
    """The three splits as tables; ``valid`` is the test split when no validation share is set."""

    train: Table
    valid: Table | None = None
    test: Table | None = None

    def items(self) -> Iterator[tuple[str, Table]]:
        for name in SPLITS:
            t = getattr(self, name)
            if t is not None:
                yield name, t

    def map(self, fn: Callable[[str, Table], Table]) -> Splits:
        return Splits(**{name: fn(name, t) for name, t in self.items()})


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
            table = _transformed(table, comp)
    gone = pd.concat(removed) if removed else pd.DataFrame(columns=["reason", "stage"])
    return CleanResult(table, gone, np.concatenate(flagged) if flagged else np.empty(0, np.int64))


def _transformed(table: Table, transform: FeatureTransform) -> Table:
    """The table with its frame feature columns replaced by the transform's output."""
    out = transform.transform(table.X)
    keep = [c for c in table.frame.columns if c not in table.X.columns]
    frame = table.frame[keep].join(out)
    old = {c.name: c for c in table.schema.columns}
    specs = [old[c] for c in keep] + [old.get(c, ColumnSpec(c, Role.FEATURE, Modality.NUMERIC)) for c in out.columns]
    arrays_specs = [c for c in table.schema.columns if c.name in table.arrays]
    return table.with_frame(frame, Schema(tuple(specs + arrays_specs)))


class Recorder:
    """Fans every metrics record out to the monitors (on rank 0; other ranks have none)."""

    def __init__(self, monitors: list[tuple[Entry, Monitor]]) -> None:
        self.monitors = monitors

    def __call__(self, record: Mapping[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        for entry, m in self.monitors:
            try:
                m.log(record)
            except Exception as e:
                raise StageError("monitor", entry.name, entry.distribution, e) from e

    def close(self) -> None:
        for _, m in self.monitors:
            m.close()


class Runner:
    """Runs a :class:`Plan` into a run folder. ``run()`` returns a :class:`Run` or raises."""

    def __init__(self, plan: Plan, catalog: Catalog, *, out: Path = Path("runs"), run_dir: Path | None = None,
                 quiet: bool = False, resume: Path | None = None, dist: DistInfo | None = None) -> None:
        from .train import dist_from_env

        later = [s for s in ("tune", "compress") if getattr(plan, s)]
        if later:
            raise InputError([Problem(s, "this forgeline version does not run this section yet") for s in later])
        self.plan, self.catalog = plan, catalog
        self.p = plan.pipeline
        self.dist = dist or dist_from_env()
        self.resume = resume
        path = run_dir or (resume if resume else new_run_dir(Path(out), self.p.name))
        self.folder = RunFolder(path if self.dist.is_main else None)
        self.dir = Path(path)
        self.quiet = quiet
        self.hook = catalog.hook
        self.stage_index = 0
        self.info = RunInfo(name=self.p.name, dir=self.dir, seed=self.p.seed, pipeline=plan.given,
                            rank=self.dist.rank, world_size=self.dist.world_size)

    # ----------------------------------------------------------------- run

    def run(self) -> Run:
        m = self.folder.manifest
        m.update(name=self.p.name, status="running", started=time.time(), seed=self.p.seed,
                 pipeline={"given": self.plan.given, "resolved": self.plan.resolved()},
                 source=str(self.plan.file) if self.plan.file else None,
                 environment=environment(), world_size=self.dist.world_size,
                 inputs={}, stages=[], metrics={})
        self.folder.save_manifest()
        self.record = Recorder(self._open_monitors())
        self.info.emit = self.record
        self._call_hook("forgeline_run_started", run=self.info)
        self.record({"event": "run", "status": "started", "name": self.p.name})
        error: BaseException | None = None
        try:
            result = self._run_stages()
            m["status"] = "succeeded"
            return result
        except BaseException as e:
            error = e
            m["status"] = "failed"
            m["error"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            m["finished"] = time.time()
            self.folder.save_manifest()
            try:
                self.record({"event": "run", "status": m["status"], "seconds": round(m["finished"] - m["started"], 3)})
                self._call_hook("forgeline_run_finished", run=self.info, status=m["status"], error=error)
            finally:
                self.record.close()
            self.folder.prune_empty("artifacts")
            if self.folder.writes and not self.quiet:
                print(f"run folder: {self.dir}", file=sys.stderr)

    def _run_stages(self) -> Run:
        fitted: list[tuple[str, Component]] = []
        splits = self._stage_data()
        for i, res in enumerate(self.plan.clean):
            splits = self._stage_clean(f"clean.{i}", res, splits, fitted)
        batch_augmenters = []
        for i, res in enumerate(self.plan.augment):
            splits, aug = self._stage_augment(f"augment.{i}", res, splits)
            if aug.per_batch:
                batch_augmenters.append(aug)
        for i, res in enumerate(self.plan.features):
            splits = self._stage_features(f"features.{i}", res, splits, fitted)
        run = Run(self.dir if self.folder.writes else None, self.folder.manifest, splits, self.schema, fitted)
        if self.plan.model is not None:
            result, run.model_component = self._stage_train(splits, batch_augmenters)
            run.model = result.module
        return run

    # ----------------------------------------------------------------- stage plumbing

    @contextmanager
    def _stage(self, stage_id: str, res: Resolved, name: str,
               component: Component | None = None) -> Iterator[dict[str, Any]]:
        """Announce, time and record one stage; turn component failures into named errors."""
        info = StageInfo(self.stage_index, stage_id.split(".")[0], name, component)
        self.stage_index += 1
        provider = res.entry.distribution
        entry = {"id": stage_id, "name": name, "provider": provider, "status": "running", "started": time.time()}
        self.folder.manifest["stages"].append(entry)
        self.folder.save_manifest()
        self._call_hook("forgeline_stage_started", run=self.info, stage=info)
        self.record({"event": "stage", "stage": stage_id, "name": name, "status": "started"})
        report: dict[str, Any] = {}
        try:
            yield report
        except InputError as e:  # bad data for this stage: say where in the pipeline
            self._fail(entry, e)
            raise InputError([replace(p, path=f"{stage_id} ({name})" + (f": {p.path}" if p.path else ""))
                              for p in e.problems]) from e
        except StageError as e:
            self._fail(entry, e)
            raise
        except Exception as e:
            self._fail(entry, e)
            raise StageError(stage_id, name, provider, e) from e
        entry.update(status="succeeded", finished=time.time(), seconds=round(time.time() - entry["started"], 3),
                     report=report)
        self.folder.save_manifest()
        self.record({"event": "stage", "stage": stage_id, "name": name, "status": "succeeded",
                     "seconds": entry["seconds"], "summary": _summary(report)})
        self._call_hook("forgeline_stage_finished", run=self.info, stage=info, report=report)

    def _fail(self, entry: dict[str, Any], error: BaseException) -> None:
        entry.update(status="failed", finished=time.time(), error=f"{type(error).__name__}: {error}",
                     traceback=traceback.format_exception(error)[-3:])
        self.folder.save_manifest()

    def _call_hook(self, name: str, **kwargs: Any) -> None:
        if self.hook is not None:
            getattr(self.hook, name)(**kwargs)

    def _ctx(self, stage_id: str) -> StageContext:
        art = self.folder.sub("artifacts")
        if art is not None:
            art = art / stage_id
            art.mkdir(parents=True, exist_ok=True)
        return StageContext(seed=self.p.seed, artifacts=art, log=self.record,
                            rank=self.dist.rank, world_size=self.dist.world_size)

    def _open_monitors(self) -> list[tuple[Entry, Monitor]]:
        uses = list(self.plan.monitor)
        names = {r.entry.name for r in uses}
        defaults = ["jsonl"] + ([] if self.quiet else ["console"])
        monitors = []
        for name in defaults:
            if name not in names:
                try:
                    entry = self.catalog.get(Kind.MONITOR, name)
                except LookupError as e:
                    if name == "jsonl":
                        raise InputError(f"monitor: the run needs the 'jsonl' monitor for metrics.jsonl ({e})") from e
                    continue
                monitors.append((entry, entry.cls()))
        monitors += [(r.entry, r.build()) for r in uses]
        if not self.dist.is_main:
            return []
        for _, m in monitors:
            m.open(self.info)
        return monitors

    # ----------------------------------------------------------------- data

    def _stage_data(self) -> Splits:
        res = self.plan.dataset
        dataset = res.build()
        with self._stage("data", res, res.entry.name, dataset) as report:
            table = dataset.load(self._ctx("data"))
            table = self._with_roles(table, dataset)
            table, checked = check_loaded(table, {n: o.modality for n, o in self.p.data.columns.items()})
            report.update(checked)
            if len(table) == 0:
                raise InputError([Problem("data.source", f"{res.entry.name!r} gave an empty table; it needs rows")])
            fp = table.fingerprint()
            self.folder.manifest["inputs"][res.entry.name] = {**fp, "params": res.params.model_dump(mode="json")}
            self.task, self.classes = _task(table)
            splits = self._split(table)
            report.update(rows=len(table), columns=len(table.schema.columns), target=table.target, task=self.task,
                          classes=len(self.classes), fingerprint=fp["sha256"],
                          splits={name: len(t) for name, t in splits.items()},
                          schema=table.schema.to_dict())
            self.folder.write_json("stages/splits.json", {name: t.row_ids for name, t in splits.items()})
            self.ground_truth = table.meta.get("ground_truth")
            self.schema = table.schema
        return splits

    def _with_roles(self, table: Table, dataset: Any) -> Table:
        """Apply ``data.target`` and ``data.columns`` role/modality overrides."""
        data = self.p.data
        target = data.target or table.target or getattr(dataset, "default_target", None)
        if target is not None and target not in table.schema:
            raise InputError([Problem("data.target", f"column {target!r} is not in the data; "
                                      f"columns: {', '.join(table.schema.names()[:20])}")])
        specs = []
        for c in table.schema.columns:
            role = Role.TARGET if c.name == target else (Role.FEATURE if c.role == Role.TARGET else c.role)
            o = data.columns.get(c.name)
            specs.append(ColumnSpec(c.name, Role(o.role) if o and o.role else role,
                                    Modality(o.modality) if o and o.modality else c.modality))
        unknown = set(data.columns) - {c.name for c in specs}
        if unknown:
            raise InputError([Problem(f"data.columns.{n}", "no such column") for n in sorted(unknown)])
        return replace(table, schema=Schema(tuple(specs)))

    def _split(self, table: Table) -> Splits:
        from sklearn.model_selection import train_test_split

        s = self.p.data.split
        ids = table.row_ids
        strat = table.y.to_numpy() if (s.stratify and self.task == "classification") else None
        try:
            rest, test = train_test_split(ids, test_size=s.test, random_state=self.p.seed, stratify=strat)
            valid = None
            if s.validation:
                strat_rest = table.take(rest).y.to_numpy() if strat is not None else None
                rest, valid = train_test_split(rest, test_size=s.validation / (1 - s.test),
                                               random_state=self.p.seed, stratify=strat_rest)
        except ValueError as e:  # e.g. a class with a single row cannot be stratified
            raise InputError([Problem("data.split", f"{e}; use stratify: false or more rows")]) from e
        return Splits(table.take(np.sort(rest)), table.take(np.sort(valid)) if valid is not None else None,
                      table.take(np.sort(test)))

    # ----------------------------------------------------------------- clean / augment / features

    def _stage_clean(self, stage_id: str, res: Resolved, splits: Splits, fitted: list) -> Splits:
        import pandas as pd

        cleaner: Cleaner = res.build()
        with self._stage(stage_id, res, res.entry.name, cleaner) as report:
            ctx = self._ctx(stage_id)
            results: dict[str, CleanResult] = {}
            for name, table in splits.items():
                out = cleaner.fit_apply(table, ctx) if name == "train" else cleaner.apply(table, ctx)
                _check_accounting(cleaner.name, name, table, out)
                results[name] = out
                report[name] = {"rows_in": len(table), "rows_out": len(out.table), "removed": len(out.removed),
                                "flagged": len(out.flagged), **self._quality(cleaner, table, out)}
            removed = [r.removed.assign(stage=stage_id, split=name) for name, r in results.items() if len(r.removed)]
            report["quarantine"] = self.folder.quarantine(f"{stage_id}-{cleaner.name}", pd.concat(removed)) if removed else None
            report["details"] = results["train"].report
            report["state"] = self.folder.save_stage(f"{stage_id}-{cleaner.name}", cleaner, res.entry.distribution)
            fitted.append((stage_id, cleaner))
        return Splits(**{name: r.table for name, r in results.items()})

    def _quality(self, cleaner: Cleaner, before: Table, out: CleanResult) -> dict[str, Any]:
        """Detection precision/recall and label-noise rates against the dataset's ground truth."""
        gt = getattr(self, "ground_truth", None)
        if gt is None:
            return {}
        q: dict[str, Any] = {}
        present = gt.reindex(before.row_ids)
        if cleaner.detects and cleaner.detects in gt.columns:
            truth = set(present.index[present[cleaner.detects].astype(bool)])
            found = set(np.asarray(out.flagged).tolist())
            hit = len(truth & found)
            q["detection"] = {"fault": cleaner.detects, "true": len(truth), "flagged": len(found), "hit": hit,
                              "precision": round(hit / len(found), 4) if found else None,
                              "recall": round(hit / len(truth), 4) if truth else None}
        if "label_noise" in gt.columns:
            after = gt.reindex(out.table.row_ids)
            q["label_noise_before"] = round(float(present["label_noise"].mean()), 4) if len(present) else None
            q["label_noise_after"] = round(float(after["label_noise"].mean()), 4) if len(after) else None
        return q

    def _stage_augment(self, stage_id: str, res: Resolved, splits: Splits) -> tuple[Splits, Augmenter]:
        aug: Augmenter = res.build()
        with self._stage(stage_id, res, res.entry.name, aug) as report:
            train = splits.train
            if aug.per_sample:
                new = aug.augment(train, self._ctx(stage_id))
                next_id = int(max(t.row_ids.max() for _, t in splits.items())) + 1
                sources = new.row_ids
                ids = np.arange(next_id, next_id + len(new), dtype=np.int64)
                frame = new.frame.copy()
                frame.index = ids
                frame.index.name = train.frame.index.name
                new = replace(new, frame=frame)
                train = train.append(new)
                self.folder.write_json(f"stages/{stage_id}-{aug.name}-provenance.json",
                                       {"row_id": ids, "source_row_id": sources})
                report.update(rows_added=len(new), rows_train=len(train))
            report["per_batch"] = aug.per_batch
        return replace(splits, train=train), aug

    def _stage_features(self, stage_id: str, res: Resolved, splits: Splits, fitted: list) -> Splits:
        transform: FeatureTransform = res.build()
        with self._stage(stage_id, res, res.entry.name, transform) as report:
            before = list(splits.train.X.columns)
            transform.fit(splits.train.X, splits.train.y)
            splits = splits.map(lambda name, t: _transformed(t, transform))
            after = list(splits.train.X.columns)
            report.update(features_in=len(before), features_out=len(after), **transform.report())
            report["state"] = self.folder.save_stage(f"{stage_id}-{transform.name}", transform, res.entry.distribution)
            fitted.append((stage_id, transform))
        return splits

    # ----------------------------------------------------------------- train

    def _job(self, splits: Splits, batch_augmenters: list) -> Any:
        from .train import TrainJob

        from .train.checkpoint import resolve_resume

        plan = self.plan
        return TrainJob(config=self.p.train, model=plan.model.build(), precision=plan.precision.build(),
                        parallel=plan.parallel.build(), train=splits.train,
                        valid=splits.valid if splits.valid is not None else splits.test,
                        task=self.task, classes=self.classes, run=self.info, dist=self.dist, seed=self.p.seed,
                        log=self.record, hooks=self.hook, checkpoint_dir=self.dir / "checkpoints",
                        resume_from=resolve_resume(self.resume) if self.resume is not None else None,
                        batch_augmenters=batch_augmenters, stage=self._ctx("train"))

    def _stage_train(self, splits: Splits, batch_augmenters: list) -> tuple[TrainResult, Any]:
        from .train.loop import fit

        job = self._job(splits, batch_augmenters)
        with self._stage("train", self.plan.model, self.plan.model.entry.name, job.model) as report:
            result = fit(job)
            metrics = dict(result.metrics)
            if splits.test is not None and splits.valid is not None:  # else the test split was the validation
                metrics.update(self._test_metrics(result, job, splits.test))
            self.folder.manifest["metrics"].update(metrics)
            report.update(result.report)
            report.update(steps=result.steps, metrics=metrics)
            self._save_model(result, job)
        return result, job.model

    def _test_metrics(self, result: TrainResult, job: Any, test: Table) -> dict[str, float]:
        from .train.evaluate import metrics_from_outputs, predict
        from .train.loop import encode_targets

        module = result.module
        device = next(module.parameters()).device
        outputs = predict(module, job.model.inputs(test), self.p.train.batch_size, job.precision, device)
        targets = encode_targets(test, self.task, self.classes, "test")
        return metrics_from_outputs(outputs, targets, self.task == "classification", prefix="test_")

    def _save_model(self, result: TrainResult, job: Any) -> None:
        if not self.folder.writes:
            return
        import torch

        model_dir = self.folder.sub("model")
        torch.save(result.module.state_dict(), model_dir / "weights.pt")
        self.folder.save_stage("model-inputs", job.model, self.plan.model.entry.distribution)
        self.folder.write_json("model/model.json", {"model": self.plan.model.entry.name,
                                                    "params": self.plan.model.params.model_dump(mode="json"),
                                                    "task": self.task, "classes": self.classes,
                                                    "weights": "weights.pt (torch.load(weights_only=True))"})


# --------------------------------------------------------------------------- helpers

def _task(table: Table) -> tuple[str, list[Any]]:
    """Classification when the target is categorical or has few integer values, else regression."""
    y = table.y
    if y is None:
        return "none", []
    spec = table.schema[table.target]
    values = y.dropna()
    few_ints = np.issubdtype(values.dtype, np.integer) and values.nunique() <= max(20, int(len(values) ** 0.5) // 10)
    if spec.modality == Modality.CATEGORICAL or not np.issubdtype(values.dtype, np.number) or few_ints:
        return "classification", sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    return "regression", []


def _check_accounting(cleaner: str, split: str, before: Table, out: CleanResult) -> None:
    """rows in = rows kept + rows removed, with no row id invented, lost or counted twice."""
    kept, gone = set(out.table.row_ids.tolist()), set(np.asarray(out.removed.index).tolist())
    if kept & gone or kept | gone != set(before.row_ids.tolist()) or len(kept) + len(gone) != len(before):
        raise RuntimeError(f"cleaner {cleaner!r} broke the accounting on the {split} split: {len(before)} rows in, "
                           f"{len(out.table)} kept + {len(out.removed)} removed (every row must be kept or quarantined)")
    if "reason" not in out.removed.columns:
        raise RuntimeError(f"cleaner {cleaner!r} removed rows without a 'reason' column")


def _summary(report: Mapping[str, Any]) -> str:
    t = report.get("train")
    if isinstance(t, Mapping) and "rows_in" in t:
        return f"train {t['rows_in']} -> {t['rows_out']} rows, {t['removed']} quarantined, {t['flagged']} flagged"
    if "rows" in report:
        return f"{report['rows']} rows, splits {report.get('splits')}"
    if "metrics" in report:
        return ", ".join(f"{k} {v:.4g}" for k, v in report["metrics"].items() if isinstance(v, float))
    return ""


