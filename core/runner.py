"""Runs a validated pipeline: sequences its stages and keeps the run record.

The stages (``forgeline.core.stages``: data -> clean -> augment -> features -> train) do the
work and share a :class:`~forgeline.core.stages.RunState`; the runner gives each its
context, fires the lifecycle hooks, times it and records it (a line of ``stages.jsonl`` when
it starts and one when it ends, then a snapshot of its outputs for ``--resume``:
``core.resume``), all inside one error handling: a failing component, a raising hook, an
interrupt each end the stage as ``failed``, named. The manifest is written when the run
starts and when it ends. ``--resume`` restores the finished stages from the run folder and
runs the rest. Only rank 0 writes the run folder. A stage section no stage class runs yet is
refused before any work starts.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .catalog import Catalog, Entry
from .components import DistInfo, Kind, Monitor, RunInfo, StageInfo
from .errors import InputError, Problem, StageError, Terminated
from .fitted import Run, apply_stages
from .hooks import LifecycleHooks
from .kinds import kinds
from .resume import Snapshots, finished_prefix, load_snapshot, resumable_manifest
from .runfolder import RunFolder, environment, new_run_dir
from .stages import STAGES, RunState, Stage, StageEnv

if TYPE_CHECKING:  # pragma: no cover
    from .validation import Plan

__all__ = ["Recorder", "Run", "Runner", "apply_stages"]


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


def plan_stages(plan: Plan) -> list[Stage]:
    """The plan's stages in run order; raises InputError for a section no stage class runs yet."""
    runs = {str(cls.kind) for cls in STAGES}
    later = [s.section for s in kinds() if s.stage and str(s.kind) not in runs and plan.of(s)]
    if later:
        raise InputError([Problem(s, "this forgeline version does not run this section yet") for s in later])
    stages = [stage for cls in STAGES for stage in cls.for_plan(plan)]
    return sorted(stages, key=lambda stage: not stage.first)  # stable: the order of STAGES otherwise


class Runner:
    """Runs a :class:`Plan` into a run folder. ``run()`` returns a :class:`Run` or raises."""

    def __init__(self, plan: Plan, catalog: Catalog, *, out: Path = Path("runs"), run_dir: Path | None = None,
                 quiet: bool = False, resume: Path | None = None, dist: DistInfo | None = None,
                 snapshots: bool = True) -> None:
        from .train import dist_from_env

        self.stages = plan_stages(plan)
        self.plan, self.catalog, self.quiet = plan, catalog, quiet
        self.dist = dist or dist_from_env()
        path = Path(run_dir or (resume if resume else new_run_dir(Path(out), plan.pipeline.name)))
        self.dir, self.folder = path, RunFolder(path if self.dist.is_main else None)
        self.hooks = LifecycleHooks(catalog.hook)
        self.info = RunInfo(name=plan.pipeline.name, dir=path, seed=plan.pipeline.seed, pipeline=plan.given,
                            rank=self.dist.rank, world_size=self.dist.world_size)
        self.record = Recorder([])
        # off for a tuner's trials (none resumes) and on engine dask, whose splits are partitions
        # in the run folder, too large to copy after every stage: such a run resumes from its start
        snapshots = snapshots and plan.pipeline.data.engine == "pandas"
        self.snapshots = Snapshots(self.folder, on=snapshots)
        self.env = StageEnv(plan, self.folder, self.record, self.info, self.dist, catalog.hook, resume,
                            catalog=catalog, quiet=quiet)

    # ----------------------------------------------------------------- the run

    def run(self) -> Run:
        m = self.folder.manifest
        p = self.plan.pipeline
        state, restored = self._start_record()
        error: BaseException | None = None
        try:
            self.record.monitors = self._open_monitors()
            self.info.emit = self.record
            self.hooks.call("forgeline_run_started", "run", run=self.info)
            self.record({"event": "run", "status": "started", "name": p.name})
            index = 0
            while index < len(self.stages):
                if index < restored:
                    self._restore_stage(self.stages[index], state)
                else:
                    self._run_stage(index, self.stages[index], state)
                if state.replan is not None:  # a tuner chose values: the rest of the run follows them
                    self._replan(index, state.replan)
                    state.replan = None
                index += 1
            m["status"] = "succeeded"
            self.snapshots.remove_old()  # a finished run is not resumed: its snapshot goes
            return Run(self.dir if self.folder.writes else None, m, state.splits, state.schema, state.fitted,
                       state.model, state.model_component)
        except BaseException as e:
            error = e
            raise
        finally:
            self._finish(error)
            if error is not None and p.data.engine == "dask":  # the other ranks may wait for rank 0's data;
                from .train.rendezvous import tell_ranks_failed  # told once its own record is written
                tell_ranks_failed(self.dist, error)

    def _start_record(self) -> tuple[RunState, int]:
        """Write the manifest of the run starting; on ``--resume``, the old record and the state
        restored from its snapshot, with how many stages it restores."""
        m, p = self.folder.manifest, self.plan.pipeline
        m.update(name=p.name, status="running", started=time.time(), seed=p.seed,
                 pipeline={"given": self.plan.given, "resolved": self.plan.resolved()},
                 source=str(self.plan.file) if self.plan.file else None,
                 environment=environment(), world_size=self.dist.world_size, inputs={}, stages=[], metrics={})
        state, restored = RunState(), 0
        if self.env.resume is not None:
            old = resumable_manifest(self.env.resume)
            old_stages = [s for s in old.get("stages") or [] if isinstance(s, dict)]
            snapshot = load_snapshot(self.env.resume)
            if snapshot is not None:
                restored = finished_prefix(self.stages, old, snapshot[0], self.plan)
                if restored:  # the tables stay the snapshot's until a stage changes them
                    state, self.snapshots.tables = snapshot[1], snapshot[0]["tables"]
            kept = {s.id for s in self.stages[:restored]}
            before = old.get("resumed") if isinstance(old.get("resumed"), list) else []
            m.update(started=old.get("started", m["started"]), stages=[s for s in old_stages if s.get("id") in kept],
                     resumed=[*before, {"at": time.time(), "restored": sorted(kept)}])
            self.folder.log_stage({"event": "resume", "kept": sorted(kept)})
        self.folder.save_manifest()
        return state, restored

    def _restore_stage(self, stage: Stage, state: RunState) -> None:
        """Put back a stage the resumed run finished (``Stage.restore``) instead of running it."""
        entry = next(s for s in self.folder.manifest["stages"] if s["id"] == stage.id)
        try:
            stage.restore(entry, state, self.env)
        except InputError:
            raise
        except Exception as e:
            raise StageError(stage.id, stage.name, stage.provider, e) from e
        entry["restored"] = time.time()
        self.folder.log_stage({"id": stage.id, "restored": entry["restored"]})
        self.record({"event": "stage", "stage": stage.id, "name": stage.name, "status": "restored"})

    def _replan(self, index: int, plan: Plan) -> None:
        """Continue after stage ``index`` with ``plan`` (the same stages less the one that
        replanned, built from the new values)."""
        self.plan = self.env.plan = plan
        self.stages = self.stages[:index + 1] + plan_stages(plan)[index:]

    def _finish(self, error: BaseException | None) -> None:
        """Write the run's status (whatever ended it), tell the hooks and monitors, close them."""
        m = self.folder.manifest
        if error is not None:  # SIGINT and SIGTERM interrupt a run; anything else fails it
            stopped = isinstance(error, (KeyboardInterrupt, Terminated))
            m.update(status="interrupted" if stopped else "failed", error=f"{type(error).__name__}: {error}")
        m["finished"] = time.time()
        self.folder.save_manifest()
        try:
            self.record({"event": "run", "status": m["status"], "seconds": round(m["finished"] - m["started"], 3)})
            self.hooks.call("forgeline_run_finished", "run", run=self.info, status=m["status"], error=error)
        except StageError as e:
            if error is None:  # the run's own error stays the one reported
                m.update(status="failed", error=str(e))
                self.folder.save_manifest()
                raise
        finally:
            self.record.close()
            self.folder.prune_empty("artifacts")
            if self.folder.writes:  # never raises: a report failure is a warning line
                from .report import write_report_or_warn
                write_report_or_warn(self.dir, self.catalog.hook, quiet=self.quiet)
            # where the run is: always, but a failure under --quiet keeps its error to one line
            if self.folder.writes and (not self.quiet or error is None):
                print(f"run folder: {self.dir}", file=sys.stderr)

    # ----------------------------------------------------------------- one stage

    def _run_stage(self, index: int, stage: Stage, state: RunState) -> None:
        """Run one stage inside the one error handling: hooks, component and record alike."""
        missing = [n for n in stage.needs if getattr(state, n) is None]
        if missing:
            raise RuntimeError(f"stage {stage.id!r} needs {', '.join(missing)}, which no earlier stage gave")
        entry = {"id": stage.id, "name": stage.name, "provider": stage.provider, "status": "running",
                 "started": time.time()}
        self.folder.manifest["stages"].append(entry)
        self.folder.log_stage(entry)
        try:
            component = stage.build().bind(self.env.context(stage.id))
            info = StageInfo(index, stage.section, stage.name, component)
            self.hooks.call("forgeline_stage_started", stage.id, run=self.info, stage=info)
            self.record({"event": "stage", "stage": stage.id, "name": stage.name, "status": "started"})
            report = stage.run(state, self.env)
            self.hooks.call("forgeline_stage_finished", stage.id, run=self.info, stage=info, report=report)
        except InputError as e:  # bad data for this stage: say where in the pipeline
            self._fail(entry, e)
            raise InputError([replace(p, path=f"{stage.id} ({stage.name})" + (f": {p.path}" if p.path else ""))
                              for p in e.problems]) from e
        except StageError as e:
            self._fail(entry, e)
            raise
        except Exception as e:
            self._fail(entry, e)
            raise StageError(stage.id, stage.name, stage.provider, e) from e
        except BaseException as e:  # interrupted: the stage did not finish
            self._fail(entry, e)
            raise
        finally:
            if stage.component is not None:  # the run's context ends with the stage
                stage.component.bind(None)
        self._succeed(entry, report)
        self.snapshots.save(index, stage, state)

    def _succeed(self, entry: dict[str, Any], report: dict[str, Any]) -> None:
        entry.update(status="succeeded", finished=time.time(), seconds=round(time.time() - entry["started"], 3),
                     report=report)
        self.folder.log_stage({k: entry[k] for k in ("id", "status", "finished", "seconds", "report")})
        self.record({"event": "stage", "stage": entry["id"], "name": entry["name"], "status": "succeeded",
                     "seconds": entry["seconds"], "summary": _summary(report)})

    def _fail(self, entry: dict[str, Any], error: BaseException) -> None:
        entry.update(status="failed", finished=time.time(), error=f"{type(error).__name__}: {error}",
                     traceback=traceback.format_exception(error)[-3:])
        self.folder.log_stage({k: entry[k] for k in ("id", "status", "finished", "error", "traceback")})

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


def _summary(report: Mapping[str, Any]) -> str:
    t = report.get("train")
    if isinstance(t, Mapping) and "rows_in" in t:
        return f"train {t['rows_in']} -> {t['rows_out']} rows, {t['removed']} quarantined, {t['flagged']} flagged"
    if "rows" in report:
        return f"{report['rows']} rows, splits {report.get('splits')}"
    if "metrics" in report:
        return ", ".join(f"{k} {v:.4g}" for k, v in report["metrics"].items() if isinstance(v, float))
    return ""
