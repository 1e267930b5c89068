"""Built-in monitors: ``console``, ``jsonl``, ``tensorboard``, ``prometheus`` and ``system``.

rich, torch's tensorboard writer, prometheus-client, psutil and NVML are imported only when
a monitor is opened.
"""

from __future__ import annotations

from forgeline.core import Monitor, hookimpl

from .console import Console
from .jsonl import Jsonl
from .prometheus import Prometheus
from .system import System
from .tensorboard import Tensorboard

__all__ = ["Console", "Jsonl", "Prometheus", "System", "Tensorboard"]


@hookimpl
def forgeline_monitors() -> list[type[Monitor]]:
    return [Console, Jsonl, Tensorboard, Prometheus, System]
