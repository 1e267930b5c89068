"""``jsonl``: every record as one JSON line in the run folder's ``metrics.jsonl``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any, Mapping

from pydantic import Field, field_validator

from forgeline.core import InputError, Monitor, Params, RunInfo


def _jsonable(value: Any) -> Any:
    """What ``json`` cannot write natively: numpy/torch scalars and arrays, paths, sets."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def json_line(record: Mapping[str, Any]) -> str:
    """One record as a single JSON line. Non-finite floats are written as ``NaN``/``Infinity``
    (as Python's ``json`` and pandas read them), so a diverged loss stays visible."""
    return json.dumps(record, default=_jsonable, separators=(",", ":")) + "\n"


class Jsonl(Monitor):
    """Appends every record as one JSON line to metrics.jsonl in the run folder, flushed at once.

    Each line is flushed when written, so a killed run keeps every line it logged. Records
    without a ``time`` get one (unix seconds).
    """

    name = "jsonl"

    class Params(Params):
        path: str = Field("metrics.jsonl", description="file to append to, relative to the run folder "
                          "(must stay inside it)")

        @field_validator("path")
        @classmethod
        def _inside_run_folder(cls, value: str) -> str:
            for flavour in (PurePosixPath, PureWindowsPath):
                p = flavour(value)
                if p.is_absolute() or p.anchor or ".." in p.parts:
                    raise ValueError(f"{value!r} leaves the run folder; give a relative path without '..', "
                                     f"e.g. 'metrics.jsonl'")
            if not value.strip() or value.endswith(("/", "\\")):
                raise ValueError(f"{value!r} is not a file name; e.g. 'metrics.jsonl'")
            return value

    def open(self, run: RunInfo) -> None:
        if run.dir is None:
            raise InputError("jsonl: there is no run folder to write metrics into (the monitor was opened "
                             "outside a run); open it with a RunInfo whose dir is set")
        root = Path(run.dir).resolve()
        self.path = (root / self.params.path).resolve()
        if not self.path.is_relative_to(root):  # e.g. through a symlink inside the run folder
            raise InputError(f"jsonl: path {self.params.path!r} resolves to {self.path}, outside the run folder {root}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()  # the system monitor's sampler thread logs concurrently

    def log(self, record: Mapping[str, Any]) -> None:
        if "time" not in record:
            record = {**record, "time": time.time()}
        line = json_line(record)
        with self._lock:
            if self._file is None:
                raise RuntimeError("jsonl: log() after close()")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._file is not None:
                self._file.close()
                self._file = None

