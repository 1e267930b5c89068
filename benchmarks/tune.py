"""Tuning benchmark: forgeline's ``bayes`` against scikit-optimize by hand and random search.

1. Branin (3 minima, f* = 0.397887): calls until a point within 1% of the minimum, for
   forgeline's ``bayes`` tuner (ask/tell), scikit-optimize's ``Optimizer`` by hand (the same
   GP), and forgeline's ``random``; median over seeds.
2. Credit risk: trials until the validation AUC reaches a target, ``bayes`` vs ``random``,
   each trial a forgeline training run (the tune stage's study, read back from its SQLite store).

``--quick`` runs few seeds and a small credit table.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import tempfile
import warnings
from pathlib import Path

import numpy as np

from forgeline.plugins.tune import Bayes, Random

F_MIN = 0.397887
SPACE = {"x": {"real": [-5.0, 10.0]}, "y": {"real": [0.0, 15.0]}}


def branin(x: float, y: float) -> float:
    a, b, c, r, s, t = 1, 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return a * (y - b * x ** 2 + c * x - r) ** 2 + s * (1 - t) * math.cos(x) + s


def calls_to_target(ask_tell, budget: int) -> int:
    for i in range(1, budget + 1):
        if ask_tell() <= F_MIN * 1.01:
            return i
    return budget + 1  # not reached


def forgeline_tuner(cls, seed: int):
    extra = {"initial_points": 10, "acquisition": "EI"} if cls is Bayes else {}
    t = cls({"space": SPACE, "metric": "loss", "trials": 100, **extra}, seed=seed)

    def step() -> float:
        v = t.ask()
        f = branin(v["x"], v["y"])
        t.tell(v, f)
        return f
    return step


def skopt_by_hand(seed: int):
    from skopt import Optimizer

    o = Optimizer([(-5.0, 10.0), (0.0, 15.0)], "GP", acq_func="EI", n_initial_points=10, random_state=seed)

    def step() -> float:
        x = o.ask()
        f = branin(*x)
        o.tell(x, f)
        return f
    return step


def credit(trials: int, rows: int, target: float, seeds: list[int]) -> None:
    import forgeline.core.api as fl

    for tuner in ("bayes", "random"):
        needed = []
        for seed in seeds:
            pipe = {"name": "credit-tune", "seed": seed,
                    "data": {"source": "credit", "with": {"rows": rows}, "target": "default",
                             "split": {"test": 0.2, "validation": 0.2}},
                    "clean": ["impute", "robust-scale"],
                    "train": {"model": {"use": "mlp", "with": {"hidden": [32]}}, "epochs": 4, "device": "cpu"},
                    "tune": {"use": tuner, "with": {"trials": trials, "metric": "val_auc", "prune": False,
                             "space": {"train.optimizer.lr": {"real": [1e-5, 3e-1], "prior": "log-uniform"},
                                       "train.batch_size": {"int": [8, 256]},
                                       "train.optimizer.weight_decay": {"real": [1e-6, 1e-1], "prior": "log-uniform"}},
                             **({"initial_points": 4} if tuner == "bayes" else {})}}}
            with tempfile.TemporaryDirectory() as out:
                run = fl.run(pipe, out=out)
                with sqlite3.connect(Path(run.dir) / "tune" / "study.sqlite") as c:
                    scores = [s for (s,) in c.execute("SELECT score FROM trials ORDER BY number")]
            hit = next((i + 1 for i, s in enumerate(scores) if s >= target), trials + 1)
            needed.append(hit)
        print(f"  credit: trials to val_auc >= {target}  {tuner:<7} median {np.median(needed):5.1f}  (per seed {needed})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--credit-target", type=float, default=0.74)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    seeds = list(range(3 if args.quick else 10))
    budget = 60 if args.quick else 100
    print("Branin: calls to within 1% of the minimum (median over seeds)")
    results = {}
    for name, make in (("forgeline bayes", lambda s: forgeline_tuner(Bayes, s)),
                       ("skopt Optimizer by hand", skopt_by_hand),
                       ("forgeline random", lambda s: forgeline_tuner(Random, s))):
        calls = [calls_to_target(make(s), budget) for s in seeds]
        results[name] = np.median(calls)
        print(f"  {name:<26} median {results[name]:5.1f}  (per seed {calls})")
    print(f"  ratio skopt/forgeline: {results['skopt Optimizer by hand'] / results['forgeline bayes']:.2f}x")
    credit(trials=12 if args.quick else 30, rows=1000 if args.quick else 4000, target=args.credit_target,
           seeds=seeds[:2] if args.quick else seeds[:5])


if __name__ == "__main__":
    main()
