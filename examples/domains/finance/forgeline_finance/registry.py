"""A registry of trained model versions in one SQLite file (stdlib ``sqlite3``, no server).

Each version records its run folder, metrics, data fingerprints and the resolved pipeline
(read from the run's ``manifest.json``: no pickle is opened). One version per model name is
in ``production``; ``promote`` moves it there (the previous one becomes ``archived``) and
``rollback`` puts back the version that was in production before the current one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from forgeline.core import InputError, Problem

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, run_dir TEXT, stage TEXT NOT NULL DEFAULT 'staging',
    metrics TEXT NOT NULL, fingerprints TEXT NOT NULL, pipeline TEXT NOT NULL, note TEXT,
    created REAL NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS promotions (
    name TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL);
"""


class ModelRegistry:
    """register / versions / promote / rollback over a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path)
        db.row_factory = sqlite3.Row
        return db

    def register_run(self, run_dir: str | Path, name: str | None = None, note: str | None = None) -> dict[str, Any]:
        """A new version from a finished run folder (its manifest's metrics, inputs, pipeline)."""
        run_dir = Path(run_dir)
        file = run_dir / "manifest.json"
        if not file.is_file():
            raise InputError([Problem("RUN", f"{run_dir}: not a run folder (no manifest.json)")])
        m = json.loads(file.read_text())
        if m.get("status") != "succeeded":
            raise InputError([Problem("RUN", f"{run_dir}: the run {m.get('status', 'did not finish')}; "
                                      "register only succeeded runs")])
        return self.register(name or m["name"], metrics=m.get("metrics", {}), fingerprints=m.get("inputs", {}),
                             pipeline=m.get("pipeline", {}).get("resolved", {}), run_dir=str(run_dir.resolve()),
                             note=note)

    def register(self, name: str, *, metrics: dict, fingerprints: dict, pipeline: dict,
                 run_dir: str | None = None, note: str | None = None) -> dict[str, Any]:
        with self._db() as db:
            (last,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (name,)).fetchone()
            db.execute("INSERT INTO versions VALUES (?, ?, ?, 'staging', ?, ?, ?, ?, ?)",
                       (name, last + 1, run_dir, json.dumps(metrics), json.dumps(fingerprints),
                        json.dumps(pipeline), note, time.time()))
        return self.get(name, last + 1)

    def versions(self, name: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM versions", ()
        if name:
            sql, args = sql + " WHERE name = ?", (name,)
        with self._db() as db:
            return [_row(r) for r in db.execute(sql + " ORDER BY name, version", args)]

    def get(self, name: str, version: int) -> dict[str, Any]:
        with self._db() as db:
            r = db.execute("SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)).fetchone()
        if r is None:
            known = [v["version"] for v in self.versions(name)]
            raise InputError([Problem("VERSION", f"model {name!r} has no version {version}; "
                                      f"versions: {known or 'none (register a run first)'}")])
        return _row(r)

    def production(self, name: str) -> dict[str, Any] | None:
        return next((v for v in self.versions(name) if v["stage"] == "production"), None)

    def promote(self, name: str, version: int) -> dict[str, Any]:
        """Make ``version`` the production version of ``name``; the previous one is archived."""
        self.get(name, version)
        with self._db() as db:
            db.execute("UPDATE versions SET stage = 'archived' WHERE name = ? AND stage = 'production'", (name,))
            db.execute("UPDATE versions SET stage = 'production' WHERE name = ? AND version = ?", (name, version))
            db.execute("INSERT INTO promotions VALUES (?, ?, ?)", (name, version, time.time()))
        return self.get(name, version)

    def rollback(self, name: str) -> dict[str, Any]:
        """Put back the version that was in production before the current one."""
        with self._db() as db:
            history = [r["version"] for r in db.execute(
                "SELECT version FROM promotions WHERE name = ? ORDER BY rowid", (name,))]
        current = self.production(name)
        previous = [v for v in history if current is None or v != current["version"]]
        if current is None or not previous:
            raise InputError([Problem("NAME", f"model {name!r} has no earlier production version to roll back to "
                                      f"(promotions: {history or 'none'})")])
        target = previous[-1]
        with self._db() as db:
            db.execute("UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?", (name, current["version"]))
            db.execute("UPDATE versions SET stage = 'production' WHERE name = ? AND version = ?", (name, target))
            # the rolled-back version leaves the history, so a second rollback goes one further back
            db.execute("DELETE FROM promotions WHERE name = ? AND version = ?", (name, current["version"]))
        return self.get(name, target)


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    for k in ("metrics", "fingerprints", "pipeline"):
        d[k] = json.loads(d[k])
    return d
