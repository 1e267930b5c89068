"""Training checkpoints: written atomically, read back with ``weights_only`` loading.

A checkpoint holds everything needed to continue a run exactly where it stopped: model,
optimizer, precision (loss scaler), scheduler, the RNG states (torch CPU/CUDA, numpy,
Python ``random``, the batch augmenters' generator) and the data position (epoch,
micro-batch within the epoch, optimizer step). Every value is a tensor, a number, a string
or a list/dict of those, so ``torch.load(weights_only=True)`` accepts it.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..runfolder import write_atomic

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")


@dataclass(frozen=True)
class Position:
    """Where training stands: the next micro-batch to run is ``micro_batch`` of ``epoch``."""

    epoch: int
    micro_batch: int
    step: int


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest step first (temporary files ignored)."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


#: what ``write_atomic`` leaves when a writer is killed mid-write: ``.<name>.<random>``
_PARTIAL = re.compile(r"^\.(step-\d+\.pt|weights[\w.-]*)\.\w+$")


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``directory`` (a run's ``checkpoints/``), or None.

    Partial files are left alone here: a live writer may be mid-write (``load_checkpoint``,
    at resume, removes a killed writer's)."""
    found = list_checkpoints(Path(directory))
    return found[-1] if found else None


def _remove_partial(directory: Path) -> None:
    """Delete what a writer killed mid-write left (never read; a resumed run has no live writer)."""
    for p in directory.iterdir():
        if _PARTIAL.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG state training draws from, as tensors and plain numbers."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if generator is not None:
        state["batch_generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if generator is not None and "batch_generator" in state:
        generator.set_state(state["batch_generator"])


def save_checkpoint(directory: Path, state: dict[str, Any], step: int, keep: int) -> Path:
    """Write ``state`` to ``directory/step-N.pt`` atomically, then keep only the newest ``keep``.

    The file is written under a temporary name in the same folder, flushed to disk and
    renamed with ``os.replace``, so a reader (or a resumed run after SIGKILL) only ever sees
    complete checkpoints.
    """
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    write_atomic(final, lambda f: torch.save({"format": FORMAT, **state}, f))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def resolve_resume(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or the newest one in a folder or in a run folder's ``checkpoints/``."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints")
        if found is None:
            raise InputError(f"--resume: no checkpoint in {path} (nor in {path / 'checkpoints'}); "
                             "the run wrote none yet (train.checkpoint.every_steps sets how often)")
        return found
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (a file, or the newest in a folder) with ``weights_only=True``:
    no arbitrary code runs on load.

    A damaged checkpoint (truncated, garbage, or holding objects that are not tensors) is
    named on stderr and the previous one in its folder is used instead; when none is usable
    the InputError names each file and what is wrong with it."""
    path = resolve_resume(path)
    if not path.is_file():
        raise InputError(f"--resume: checkpoint {path} does not exist; point at a run folder with checkpoints/")
    _remove_partial(path.parent)
    older = [p for p in list_checkpoints(path.parent) if p.name < path.name] if _NAME.match(path.name) else []
    problems = []
    for candidate in [path, *reversed(older)]:
        try:
            state = _read_checkpoint(candidate)
        except _Damaged as e:
            problems.append(f"{candidate} {e}")
            continue
        if candidate != path:
            import sys

            print(f"warning: {'; '.join(problems)}; resuming from the previous checkpoint {candidate}",
                  file=sys.stderr)
        return state
    raise InputError(f"--resume: no usable checkpoint: {'; '.join(problems)}")


class _Damaged(Exception):
    pass


def _read_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the reader says, the file is unusable
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # torch's refusal is a page of advice (weights_only=False: never, for a file we did not write);
        # keep the line that says what was found
        detail = next((line for line in lines if "Unsupported" in line), lines[0] if lines else type(e).__name__)
        detail = detail.split(" Please ")[0]
        raise _Damaged(f"is damaged or not plain tensors ({type(e).__name__}: {detail})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise _Damaged(f"is not a forgeline checkpoint (format {FORMAT})")
    return state
