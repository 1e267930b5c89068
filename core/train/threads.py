"""How many CPU threads torch's kernels use, on a machine that other work may share.

torch's default is one thread per core in every process. When another job (or another rank)
keeps a core busy, every parallel region then waits for a thread the OS has descheduled and
training crawls: a small MLP measured here fell from ~3,700 to ~100 samples/s beside a busy
neighbour on two cores, while one thread kept its pace. So unless ``train.threads`` is set,
nor ``OMP_NUM_THREADS``, the loop uses the cores that are idle now (read from
``/proc/stat``, less this process's own use), at most its share of the cores among the ranks
on this machine, and looks again at every epoch's end.

Float sums can differ in their last bits between thread counts, so runs that must agree bit
for bit (a resumed run and its original, say) fix the count with either setting.
"""

from __future__ import annotations

import os
import time

_SAMPLE_S = 0.1  # how long the first look at the machine's load lasts


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy_total() -> tuple[float, float] | None:
    """(busy, all) CPU seconds of the whole machine since boot, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


class ThreadBudget:
    """Chooses torch's intra-op thread count (fixed when ``threads`` is given)."""

    def __init__(self, threads: int | None) -> None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        self.fixed = threads or (int(env) if env.isdigit() and int(env) > 0 else None)
        self.cap = max(1, _cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
        self._mark = self._now()
        self.threads = self.fixed or self.cap

    @staticmethod
    def _now() -> tuple[float, float, tuple[float, float] | None]:
        return time.monotonic(), time.process_time(), _busy_total()

    def _others_busy(self) -> float | None:
        """Cores kept busy by other processes since the last look."""
        then, now = self._mark, self._now()
        self._mark = now
        if then[2] is None or now[2] is None or now[0] - then[0] <= 0:
            return None
        machine = now[2][0] - then[2][0]
        mine = now[1] - then[1]
        return max(0.0, machine - mine) / (now[0] - then[0])

    def start(self) -> int:
        """Look at the machine for a moment and set the thread count; returns it."""
        if self.fixed is None and self.cap > 1:
            time.sleep(_SAMPLE_S)
        return self.adjust()

    def adjust(self) -> int:
        """Set the thread count from the load seen since the last call; returns it."""
        import torch

        others = self._others_busy()
        if self.fixed is None and others is not None:
            self.threads = min(self.cap, max(1, round(_cores() - others)))
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return self.threads
