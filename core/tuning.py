"""The tune stage: trials of the training run, stored in SQLite, then the best values.

Three parts with narrow interfaces, so the stage can be moved between runner layouts:

- :class:`StudyStore` — ``tune/study.sqlite`` in the run folder: every trial (values, status,
  score) and every trial's per-epoch metrics, committed as they happen, so a study killed at
  any point resumes without repeating a finished trial.
- :func:`run_study` — the ask/tell loop: re-tells stored trials to the tuner, asks
  ``parallel`` points at a time, runs each through a ``train(number, values, watch)``
  callable, applies the median rule through :class:`Watch`, and returns a :class:`StudyResult`.
- :class:`Study` — binds those to a run (``forgeline.core.stages.tune`` runs it as a stage): a
  trial is the training job with the trial's values (data stages shared when every tuned
  path is under ``train.``), or a whole nested run of the pipeline otherwise; afterwards the
  runner continues with the best values.

The median rule reaches into training through the job's existing lifecycle hooks: a trial's
job gets :class:`TrialHooks`, which forwards every hook and, at ``forgeline_epoch_ended``,
records the epoch and raises :class:`TrialPruned` when the trial falls behind.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .components import Tuner
    from .stages import RunState, StageEnv
    from .validation import Plan

STORE = "study.sqlite"
#: statuses a study keeps (and re-tells on resume); "running" rows left by a killed study become "killed"
DONE = ("finished", "pruned")


class TrialPruned(Exception):
    """Raised from the epoch hook when the median rule stops a trial."""


# --------------------------------------------------------------------------- store

class StudyStore:
    """Trials and their per-epoch metrics in SQLite, one committed write per event."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)  # autocommit: each write is durable
            self.db.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS trials (number INTEGER PRIMARY KEY, params TEXT NOT NULL,
                    status TEXT NOT NULL, score REAL, started REAL, finished REAL, error TEXT);
                CREATE TABLE IF NOT EXISTS epochs (trial INTEGER NOT NULL, epoch INTEGER NOT NULL,
                    metrics TEXT NOT NULL, PRIMARY KEY (trial, epoch));
            """)

    def trials(self) -> list[dict[str, Any]]:
        if self.db is None:
            return []
        rows = self.db.execute("SELECT number, params, status, score, started, finished, error FROM trials "
                               "ORDER BY number").fetchall()
        return [{"number": n, "values": json.loads(p), "status": s, "score": sc, "started": st,
                 "finished": f, "error": e} for n, p, s, sc, st, f, e in rows]

    def curves(self, metric: str) -> dict[int, dict[int, float]]:
        """trial number -> {epoch: metric} for every stored epoch."""
        if self.db is None:
            return {}
        out: dict[int, dict[int, float]] = {}
        for trial, epoch, metrics in self.db.execute("SELECT trial, epoch, metrics FROM epochs"):
            value = json.loads(metrics).get(metric)
            if value is not None:
                out.setdefault(trial, {})[epoch] = value
        return out

    def mark_killed(self) -> int:
        """Trials a killed study left running; their epochs are dropped, their values re-asked."""
        if self.db is None:
            return 0
        gone = [n for (n,) in self.db.execute("SELECT number FROM trials WHERE status = 'running'")]
        for n in gone:
            self.db.execute("DELETE FROM epochs WHERE trial = ?", (n,))
            self.db.execute("UPDATE trials SET status = 'killed' WHERE number = ?", (n,))
        return len(gone)

    def start(self, number: int, values: Mapping[str, Any]) -> None:
        if self.db is not None:
            self.db.execute("INSERT INTO trials (number, params, status, started) VALUES (?, ?, 'running', ?)",
                            (number, json.dumps(dict(values)), time.time()))

    def epoch(self, number: int, epoch: int, metrics: Mapping[str, Any]) -> None:
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?)",
                            (number, epoch, json.dumps({k: v for k, v in metrics.items()
                                                        if isinstance(v, (int, float))})))

    def finish(self, number: int, status: str, score: float | None, error: str | None = None) -> None:
        if self.db is not None:
            self.db.execute("UPDATE trials SET status = ?, score = ?, finished = ?, error = ? WHERE number = ?",
                            (status, score, time.time(), error, number))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


# --------------------------------------------------------------------------- median rule

@dataclass
class Watch:
    """One trial's view of the study: records its epochs and applies the median rule."""

    number: int
    metric: str
    maximize: bool
    store: StudyStore
    curves: dict[int, dict[int, float]]  # finished trials' curves (shared, in memory on every rank)
    prune: bool = True
    prune_after: int = 1
    min_finished: int = 3
    log: Callable[[Mapping[str, Any]], None] = lambda record: None
    last: float | None = None

    def epoch_ended(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.store.epoch(self.number, epoch, metrics)
        value = metrics.get(self.metric)
        if value is None:
            return
        self.last = float(value)
        self.curves.setdefault(self.number, {})[epoch] = self.last
        peers = [c[epoch] for n, c in self.curves.items() if n != self.number and n in self.finished and epoch in c]
        if not self.prune or epoch + 1 < self.prune_after or len(peers) < self.min_finished:
            return
        median = statistics.median(peers)
        if (self.last < median) if self.maximize else (self.last > median):
            raise TrialPruned(f"epoch {epoch}: {self.metric} {self.last:.4g} is behind the median {median:.4g} "
                              f"of {len(peers)} finished trials")

    finished: set[int] = field(default_factory=set)


class TrialHooks:
    """The run's lifecycle hooks for one trial: all forwarded, the epoch end also watched."""

    def __init__(self, hooks: Any, watch: Watch) -> None:
        self._hooks, self._watch = hooks, watch

    def __getattr__(self, name: str) -> Any:
        if self._hooks is None:
            return _NoHook()
        return getattr(self._hooks, name)

    def forgeline_epoch_ended(self, run: Any, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._hooks is not None:
            self._hooks.forgeline_epoch_ended(run=run, epoch=epoch, metrics=metrics)
        self._watch.epoch_ended(epoch, metrics)


class _NoHook:
    def __call__(self, **kwargs: Any) -> None:
        return None

    def get_hookimpls(self) -> list:
        return []


# --------------------------------------------------------------------------- the ask/tell loop

@dataclass
class StudyResult:
    best_values: dict[str, Any]
    best_score: float
    trials: list[dict[str, Any]]
    report: dict[str, Any]


def run_study(tuner: Tuner, train: Callable[[int, dict[str, Any], Watch], Mapping[str, float]], *,
              store: StudyStore, log: Callable[[Mapping[str, Any]], None] = lambda r: None,
              plot: Path | None = None) -> StudyResult:
    """Run (or resume) a study: ``train(number, values, watch)`` runs one trial and returns its
    final validation metrics; it may raise :class:`TrialPruned` (via ``watch``)."""
    p = tuner.params
    metric, maximize = tuner.metric, tuner.maximize
    killed = store.mark_killed()
    stored = store.trials()
    done = [t for t in stored if t["status"] in DONE]
    for t in done:  # resume: the tuner learns what the killed study already knew
        tuner.tell(t["values"], t["score"])
    curves = {n: c for n, c in store.curves(metric).items()}
    finished = {t["number"] for t in done if t["status"] == "finished"}
    if done or killed:
        log({"event": "tune", "status": "resumed", "finished": len(done), "killed": killed})
    number = max((t["number"] for t in stored), default=-1) + 1
    remaining = tuner.trials - len(done)
    while remaining > 0:
        batch = tuner.ask_batch(min(getattr(p, "parallel", 1), remaining))
        # points of a batch run one after the other in this process (see docs/architecture.md)
        for values in batch:
            watch = Watch(number, metric, maximize, store, curves, getattr(p, "prune", False),
                          getattr(p, "prune_after", 1), getattr(p, "min_finished", 3), log, finished=finished)
            store.start(number, values)
            status, error = "finished", None
            try:
                metrics = train(number, values, watch)
                score = metrics.get(metric)
                if score is None:
                    raise KeyError(f"tune.with.metric: the training reported no {metric!r}; it reported "
                                   f"{', '.join(sorted(metrics))}")
            except TrialPruned as e:
                status, error, score = "pruned", str(e), watch.last
            except BaseException as e:
                store.finish(number, "failed", None, f"{type(e).__name__}: {e}")
                raise
            store.finish(number, status, float(score), error)
            if status == "finished":
                finished.add(number)
            tuner.tell(values, float(score))
            log({"event": "trial", "trial": number, "status": status, "values": values, metric: float(score)})
            number += 1
            remaining -= 1
    trials = [t for t in store.trials() if t["status"] in DONE] if store.db is not None else []
    best = _best(trials or [{"values": v, "score": s, "status": "finished"} for v, s in _told(tuner)], maximize)
    report = {"metric": metric, "maximize": maximize, "trials": len(trials), "best_values": best["values"],
              "best_score": best["score"], "pruned": sum(t["status"] == "pruned" for t in trials),
              "table": [{"trial": t["number"], **t["values"], metric: t["score"], "status": t["status"]}
                        for t in trials]}
    if plot is not None and trials:
        report["plot"] = convergence_plot(trials, metric, maximize, plot)
    return StudyResult(best["values"], best["score"], trials, report)


def _told(tuner: Any) -> list[tuple[dict[str, Any], float]]:
    names = list(tuner.params.space)
    return [(dict(zip(names, x)), s) for x, s in getattr(tuner, "told_", [])]


def _best(trials: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """The best finished trial (pruned ones only when none finished)."""
    pool = [t for t in trials if t["status"] == "finished"] or trials
    return (max if maximize else min)(pool, key=lambda t: t["score"])


def convergence_plot(trials: list[dict[str, Any]], metric: str, maximize: bool, path: Path) -> str:
    """Each trial's score and the best so far, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scores = np.array([t["score"] for t in trials], dtype=float)
    best = (np.maximum if maximize else np.minimum).accumulate(scores)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    pruned = np.array([t["status"] == "pruned" for t in trials])
    x = np.arange(len(trials))
    ax.scatter(x[~pruned], scores[~pruned], s=14, label="trial")
    if pruned.any():
        ax.scatter(x[pruned], scores[pruned], s=14, marker="x", label="pruned (last epoch reached)")
    ax.step(x, best, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="tuning convergence")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- binding to a runner

def tuned_paths_train_only(plan: Plan) -> bool:
    """Whether every searched path is under ``train.`` (then the data stages are shared by trials)."""
    space = plan.tune.params.model_dump().get("space") or {}
    return all(str(k).startswith("train.") for k in space)


class Study:
    """A study bound to a run: ``run(state)`` searches, then returns the plan with the best values.

    A trial is the training job with the trial's values, on the data the earlier stages
    prepared when every tuned path is under ``train.``, or a whole nested run of the pipeline
    (``tune/trial-NNN``) otherwise."""

    def __init__(self, env: StageEnv, tuner: Tuner) -> None:
        self.env, self.tuner = env, tuner

    def plan_with(self, values: Mapping[str, Any], final: bool = False) -> Plan:
        """The pipeline with ``values`` set (``--set`` semantics), without ``tune:`` (and, for a
        trial, without ``compress:``)."""
        from .validation import load_plan

        plan = self.env.plan
        drop = ("tune",) if final else ("tune", "compress")
        given = {k: v for k, v in plan.given.items() if k not in drop}
        base = plan.file.parent if plan.file else None
        return load_plan(given, self.env.catalog, [f"{k}={json.dumps(v)}" for k, v in values.items()],
                         base=base, hardware=False)

    def run(self, state: RunState | None) -> tuple[Plan, dict[str, Any]]:
        """Run the study (``state``: the prepared data to share, or None to run whole pipelines)."""
        from .train.checkpoint import latest_checkpoint

        env, tuner = self.env, self.tuner
        tuner.seed = env.plan.pipeline.seed
        tune_dir = env.folder.sub("tune")
        resuming = env.resume is not None and (env.run.dir / "tune" / STORE).exists()
        store = StudyStore(tune_dir / STORE if tune_dir is not None else None)
        if tune_dir is not None and not resuming:
            store.db.execute("DELETE FROM trials")  # a fresh study in a reused folder
            store.db.execute("DELETE FROM epochs")
        try:
            def train(number: int, values: dict[str, Any], watch: Watch) -> Mapping[str, float]:
                plan = self.plan_with(values)
                watch.log = lambda rec: env.record({**rec, "trial": number})
                if state is not None:
                    return self._train_shared(plan, state, watch)
                return self._run_nested(plan, number, watch)

            result = run_study(tuner, train, store=store, log=env.record,
                               plot=tune_dir / "convergence.png" if tune_dir is not None else None)
        finally:
            store.close()
        if env.resume is not None and latest_checkpoint(env.run.dir / "checkpoints") is None:
            env.resume = None  # the study was killed before the final training checkpointed: start it afresh
        return self.plan_with(result.best_values, final=True), result.report

    def _train_shared(self, plan: Plan, state: RunState, watch: Watch) -> Mapping[str, float]:
        from .stages.train import train_job
        from .train.loop import fit

        job = replace(train_job(plan, state, self.env, plan.model.build(), final=False),
                      hooks=TrialHooks(self.env.hooks, watch), log=watch.log)
        return fit(job).metrics

    def _run_nested(self, plan: Plan, number: int, watch: Watch) -> Mapping[str, float]:
        from .runner import Runner

        env = self.env
        nested = Runner(plan, env.catalog, run_dir=env.run.dir / "tune" / f"trial-{number:03d}", quiet=True,
                        dist=env.dist, snapshots=False)
        nested.env.hooks = TrialHooks(env.hooks, watch)
        return nested.run().metrics
