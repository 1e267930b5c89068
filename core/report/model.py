"""What report sections are built from: a run folder, read-only, and the section they return.

Light on purpose (no matplotlib, no pandas): ``core/hookspecs.py`` imports these two types.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from ..runfolder import read_manifest


@dataclass(frozen=True)
class ReportSection:
    """One section of ``report.html``: a title and its body.

    ``html`` is markup written by the section's code; anything taken from the run (names,
    values, messages) must be escaped with ``html.escape`` first — a run folder is data.
    """

    title: str
    html: str
    id: str = ""  # the anchor; a slug of the title when empty

    @property
    def anchor(self) -> str:
        return self.id or re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


class ReportRun:
    """A run folder as the report sees it: manifest, metrics records, quarantine, artifacts."""

    def __init__(self, dir: Path) -> None:  # noqa: A002 - mirrors RunInfo.dir
        self.dir = Path(dir)
        self.manifest: dict[str, Any] = read_manifest(self.dir)

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` (a line cut short by a killed run is skipped)."""
        file = self.dir / "metrics.jsonl"
        out = []
        if file.is_file():
            with file.open() as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        out.append(record)
        return out

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == event]

    @property
    def stages(self) -> list[dict[str, Any]]:
        return [s for s in self.manifest.get("stages", []) if isinstance(s, dict)]

    def stages_of(self, section: str) -> list[dict[str, Any]]:
        """The manifest entries of one pipeline section (``clean`` -> ``clean.0``, ``clean.1``...)."""
        return [s for s in self.stages if str(s.get("id", "")).split(".")[0] == section]

    def artifacts(self, name: str) -> Iterator[tuple[str, Path]]:
        """``(stage id, path)`` of every ``artifacts/<stage>/<name>`` file, in pipeline order."""
        root = self.dir / "artifacts"
        order = {s.get("id"): i for i, s in enumerate(self.stages)}
        found = [(p.parent.name, p) for p in root.glob(f"*/{name}") if p.is_file()] if root.is_dir() else []
        yield from sorted(found, key=lambda f: (order.get(f[0], len(order)), f[0]))

    def artifact_json(self, name: str) -> Iterator[tuple[str, Any]]:
        """The parsed ``artifacts/<stage>/<name>`` JSON files; unreadable ones are skipped."""
        for stage, path in self.artifacts(name):
            try:
                yield stage, json.loads(path.read_text())
            except (OSError, ValueError):
                continue
