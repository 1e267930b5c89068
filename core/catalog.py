"""The catalog: every registered component, by kind and name, with where it came from.

The registry builds it (``forgeline.registry.build_catalog``); the runner and validation only
read it, so ``core`` never imports the registry or a plugin.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterator

from .components import Component, Kind


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: Kind | str  # a Kind for the built-in kinds, the declared name for a kind a plugin added
    name: str
    cls: type[Component]
    distribution: str  # the distribution that registered it ("forgeline" for built-ins)
    version: str
    plugin: str  # entry-point name

    @property
    def summary(self) -> str:
        return self.cls.summary()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "name": self.name, "distribution": self.distribution,
                "version": self.version, "summary": self.summary, "plugin": self.plugin}


@dataclass(frozen=True)
class Broken:
    """A plugin that could not be loaded or registered something invalid."""

    plugin: str
    distribution: str
    version: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "distribution": self.distribution,
                "version": self.version, "error": self.error}


class LookupProblem(LookupError):
    """A name that is unknown or ambiguous; ``str()`` is a message a user can act on."""


#: comma-separated entry-point or distribution names of plugins not to load
DISABLE_ENV = "FORGELINE_DISABLE_PLUGINS"


@dataclass
class Catalog:
    entries: list[Entry] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    hook: Any = None  # the plugin manager's hook relay (lifecycle hooks), or None
    disabled: tuple[str, ...] = ()  # plugins not loaded because DISABLE_ENV names them

    def _missing_note(self) -> str:
        """Why a name may be unknown besides a typo: plugins disabled or broken (they may provide it)."""
        notes = []
        if self.disabled:
            notes.append(f"{DISABLE_ENV}={','.join(self.disabled)} is set and turns off plugin(s) "
                         f"{', '.join(self.disabled)}, which may provide it")
        for b in self.broken:
            notes.append(f"plugin {b.plugin!r} ({b.distribution} {b.version}) failed to load and may provide it: "
                         f"{b.error}")
        return "".join(f"; {n}" for n in notes)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def of_kind(self, kind: Kind | str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]

    def get(self, kind: Kind | str, ref: str) -> Entry:
        """Resolve ``name`` or ``provider:name`` of ``kind``.

        Raises :class:`LookupProblem` for an unknown name (with the closest names) or a name
        that two distributions register (naming both, and how to pick one).
        """
        provider, _, name = ref.rpartition(":")
        found = [e for e in self.of_kind(kind) if e.name == name and (not provider or e.distribution == provider)]
        if len(found) == 1:
            return found[0]
        if found:
            dists = " and ".join(sorted(e.distribution for e in found))
            picks = " or ".join(f"'{e.distribution}:{e.name}'" for e in found)
            raise LookupProblem(f"{kind} {name!r} is registered by both {dists}; write {picks}")
        known = sorted({e.name for e in self.of_kind(kind)})
        if provider and any(e.name == name for e in self.of_kind(kind)):
            dists = sorted(e.distribution for e in self.of_kind(kind) if e.name == name)
            raise LookupProblem(f"{kind} {name!r} is not provided by {provider!r} (it is by: {', '.join(dists)})")
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
            f"; known: {', '.join(known)}" if known else f"; no {kind} is installed")
        return_msg = f"unknown {kind} {name!r}{hint}{self._missing_note()}"
        raise LookupProblem(return_msg)

    def find(self, ref: str) -> list[Entry]:
        """Every entry named ``ref`` (or ``provider:name``) across kinds."""
        provider, _, name = ref.rpartition(":")
        return [e for e in self.entries if e.name == name and (not provider or e.distribution == provider)]
