"""Start-up cost: `forgeline plugins list` and `forgeline --help` against `python -c "import torch"`.

Both forgeline commands import every plugin module but no heavy library, so they should take
well under the time torch alone takes to import (the engine issue asks for < 0.5x).

    python benchmarks/startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="runs of each command (the median is kept)")
    args = parser.parse_args()
    forgeline = shutil.which("forgeline") or sys.exit("forgeline is not on PATH: install the project first")
    commands = {"forgeline plugins list": [forgeline, "plugins", "list"], "forgeline --help": [forgeline, "--help"],
                "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
    times = {name: [] for name in commands}
    for _ in range(args.reps):  # interleaved, so load changes hit every command alike
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    torch = statistics.median(times["python -c 'import torch'"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:28s} {t:6.3f} s   {t / torch:5.2f}x import torch")


if __name__ == "__main__":
    main()
