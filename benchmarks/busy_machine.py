"""Training beside a CPU-bound neighbour: forgeline's thread budget against torch's default.

A small MLP (the credit-risk example's shape: 40 features, 256-128 hidden, batch 16) trains
for one epoch in a fresh process, once with forgeline's default thread choice and once with
torch's default (one thread per core), first on a quiet machine, then beside a neighbour
process that keeps ``--neighbours`` cores busy. Prints samples/s and the ratio.

    python benchmarks/busy_machine.py [--rows 20000] [--neighbours 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TRAIN = r"""
import json, sys, numpy as np, pandas as pd
from forgeline.core import DistInfo, RunInfo
from forgeline.core.data import Table
from forgeline.core.pipeline import Train
from forgeline.core.train import TrainJob
from forgeline.core.train.loop import fit
from forgeline.plugins.models.mlp import MLP
from forgeline.plugins.parallel.single import Single
from forgeline.plugins.precision import FP32

rows, threads = int(sys.argv[1]), (None if sys.argv[2] == "auto" else int(sys.argv[2]))
rng = np.random.default_rng(0)
x = rng.normal(size=(rows, 40)).astype(np.float32)
frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(40)]).assign(y=(x[:, 0] + x[:, 1] > 0).astype(int))
config = Train.model_validate({"model": "mlp", "device": "cpu", "epochs": 1, "batch_size": 16,
                               "threads": threads, "log_every": 1000})
job = TrainJob(config=config, model=MLP({"hidden": [256, 128]}), precision=FP32(), parallel=Single(),
               train=Table.from_frame(frame, "y"), valid=None, task="classification", classes=[0, 1],
               run=RunInfo(name="busy", dir=None, seed=0, pipeline={}), dist=DistInfo(), seed=0)
report = fit(job).report
print(json.dumps({"samples_per_s": rows / report["train_time_s"], "threads": report["threads"]}))
"""


def train(rows: int, threads: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", TRAIN, str(rows), threads], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--neighbours", type=int, default=1)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores; neighbour processes when busy: {args.neighbours}")
    print(f"{'machine':8} {'threads':>22} {'samples/s':>10}")
    for state in ("quiet", "busy"):
        spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.neighbours if state == "busy" else 0)]
        time.sleep(1.0 if spin else 0)
        try:
            auto, torch_default = train(args.rows, "auto"), train(args.rows, str(cores))
        finally:
            for p in spin:
                p.kill()
        print(f"{state:8} {'forgeline (chose ' + str(auto['threads']) + ')':>22} {auto['samples_per_s']:10.0f}")
        print(f"{state:8} {'torch default (' + str(cores) + ')':>22} {torch_default['samples_per_s']:10.0f}")
        print(f"{state:8} {'ratio':>22} {auto['samples_per_s'] / torch_default['samples_per_s']:9.2f}x")


if __name__ == "__main__":
    main()
