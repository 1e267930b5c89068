"""The run folder: manifest, metrics, quarantine, fitted stages, checkpoints, model.

Only rank 0 writes; on other ranks a :class:`RunFolder` is ``None``-backed and every write is a
no-op, so callers never branch on the rank. The per-stage record is append-only: each stage's
start and end is one line of ``stages.jsonl`` (O(1) per stage, and a killed run keeps the
record of what finished); ``manifest.json`` is written when the run starts and when it ends,
the second time with every stage's entry. For a run that never ended, :func:`read_manifest`
folds the stage log into the manifest, so readers see the stages of a killed run too.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping

from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SUBDIRS = ("quarantine", "stages", "checkpoints", "model", "artifacts")
STAGE_LOG = "stages.jsonl"


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(out: Path, name: str) -> Path:
    """Create and return ``out/<name>-<UTC timestamp>``, with a ``-2``, ``-3`` ... suffix when
    another run claimed that name. The folder is created here, exclusively, so two runs that
    start at the same moment (two processes, two threads of the Python API) never share one."""
    base = out / f"{name}-{utc_stamp()}"
    path, n = base, 1
    try:
        out.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                path.mkdir()
                return path
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
    except OSError as e:  # --out below a file, read-only, full...: the user's to fix
        raise InputError(f"--out: cannot create the run folder {path} ({e.strerror or e}); "
                         f"give a writable folder") from None


def write_atomic(path: Path, data: bytes | Callable[[IO[bytes]], None]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to a temporary file beside
    ``path``, then rename: readers never see half a file, a killed writer leaves the old one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def inside(root: Path, relative: str | os.PathLike) -> Path:
    """``root/relative``, refusing paths that leave ``root`` (absolute paths, ``..``)."""
    root = root.resolve()
    target = (root / relative).resolve()
    if root != target and root not in target.parents:
        raise InputError(f"{relative}: path leaves the run folder {root}; give a path inside it")
    return target


def environment() -> dict[str, Any]:
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "cpus": os.cpu_count()}
    for dist in ("forgeline", "torch", "numpy", "pandas", "scikit-learn", "pydantic", "pluggy"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


class RunFolder:
    """Writes one run's folder (rank 0); ``path=None`` makes every write a no-op."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.manifest: dict[str, Any] = {}
        if path is not None:
            try:
                path.mkdir(parents=True, exist_ok=True)
                for sub in SUBDIRS:
                    (path / sub).mkdir(exist_ok=True)
            except OSError as e:  # --out below a file, read-only, full...: the user's to fix
                raise InputError(f"--out: cannot create the run folder {path} ({e.strerror or e}); "
                                 f"give a writable folder") from None

    @property
    def writes(self) -> bool:
        return self.path is not None

    def sub(self, name: str) -> Path | None:
        return self.path / name if self.path else None

    def prune_empty(self, name: str) -> None:
        """Remove the empty folders under ``name`` (stages that wrote no files)."""
        if self.path:
            for d in sorted((self.path / name).glob("*"), reverse=True):
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()

    def save_manifest(self) -> None:
        if self.path:
            data = json.dumps(self.manifest, indent=2, default=_json_default).encode()
            write_atomic(self.path / "manifest.json", data)

    def log_stage(self, event: Mapping[str, Any]) -> None:
        """Append one stage event (its entry when it starts, what changed when it ends) to the stage log."""
        if self.path:
            with open(self.path / STAGE_LOG, "a") as f:
                f.write(json_record(event) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def quarantine(self, stage: str, rows: pd.DataFrame) -> str | None:
        """Write the rows a stage removed (with ``stage``/``split``/``reason`` columns); returns the file."""
        if not self.path or rows.empty:
            return None
        file = self.path / "quarantine" / f"{stage}.csv"
        rows.to_csv(file, index=True)
        return str(file.relative_to(self.path))

    def save_stage(self, stage: str, component: Any, distribution: str) -> str | None:
        """Save a fitted component as data (``core/state.py``: JSON + .npy + .skops, never a pickle)
        so the run can be applied to new data; returns its ``state.json`` relative to the run folder."""
        if not self.path:
            return None
        from .state import STATE_FILE, save_component

        folder = inside(self.path / "stages", stage)
        save_component(folder, component, distribution, write_atomic)
        return str((folder / STATE_FILE).relative_to(self.path.resolve()))

    def write_json(self, relative: str, data: Any) -> None:
        if self.path:
            target = inside(self.path, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, json.dumps(data, indent=2, default=_json_default).encode())


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest. A run that ended wrote every stage into it; for one that did not
    (killed: no ``finished``) the ``stages`` come from the stage log. Run folders written
    before the stage log existed have their stages in the manifest alone."""
    file = run_dir / "manifest.json"
    if not file.is_file():
        raise InputError(f"{run_dir}: not a run folder (no manifest.json)")
    try:
        manifest = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{file}: damaged manifest, not valid JSON ({e}); the run record cannot be read") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{file}: damaged manifest, a JSON object is expected")
    if "finished" not in manifest and (run_dir / STAGE_LOG).is_file():
        manifest["stages"] = read_stage_log(run_dir / STAGE_LOG)
    return manifest


def read_stage_log(file: Path) -> list[dict[str, Any]]:
    """Fold the stage log into one entry per stage, in run order. A ``running`` event starts a
    stage's entry afresh, other events update it; a ``resume`` event keeps only the stages it
    names. A last line cut short by a kill is skipped; damage elsewhere is an InputError."""
    try:
        lines = file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{file}: damaged stage log ({e}); the run record cannot be read") from None
    stages: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if number == len(lines):
                break
            raise InputError(f"{file}:{number}: damaged stage log line ({e}); the run record cannot be read") from None
        if event.get("event") == "resume":
            stages = {k: v for k, v in stages.items() if k in set(event.get("kept", []))}
        elif "id" in event:
            sid = str(event["id"])
            if event.get("status") == "running" or sid not in stages:
                stages[sid] = dict(event)
            else:
                stages[sid].update(event)
    return list(stages.values())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, _dt.datetime)):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "model_dump"):
        return o.model_dump()
    return repr(o)


def json_record(record: Mapping[str, Any]) -> str:
    return json.dumps(record, default=_json_default)
