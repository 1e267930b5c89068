"""Plugin discovery: entry points -> pluggy plugin manager -> validated :class:`Catalog`.

The loading loop is owned here (not ``pm.load_setuptools_entrypoints``) so that every failure
is attributed to its plugin and distribution: an import error, a misspelled hook, a hook that
raises or returns something that is not a valid component class. Such a plugin is recorded as
:class:`~forgeline.core.Broken` and everything else keeps working (``strict`` makes it an
:class:`~forgeline.core.InputError` instead).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any, Iterable

import pluggy
from pydantic import BaseModel

from ..core import hookspecs
from ..core.catalog import DISABLE_ENV, Broken, Catalog, Entry
from ..core.components import NAME_RE, Kind
from ..core.kinds import KindSpec, as_kind, kinds, spec_of
from ..core.errors import InputError

GROUP = "forgeline.plugins"
HOOK_PREFIX = "forgeline_"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: its entry-point name and its distribution."""

    plugin: str  # entry-point name
    distribution: str  # distribution name as in its metadata
    version: str

    @property
    def key(self) -> str:
        """Name under which the plugin is registered in the manager (unique across distributions)."""
        return f"{self.distribution}:{self.plugin}"

    def broken(self, error: BaseException | str) -> Broken:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return Broken(self.plugin, self.distribution, self.version, " ".join(text.split()))


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with forgeline's hookspecs and no plugins registered."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    add_kind_hookspecs(pm)
    return pm


def add_kind_hookspecs(pm: pluggy.PluginManager) -> None:
    """Add the registration hookspec of every declared kind the manager does not have yet
    (kinds a plugin declared on import: its own hooks must be known before it registers)."""
    new = [s for s in kinds() if not getattr(pm.hook, s.hook, None) or not getattr(pm.hook, s.hook).has_spec()]
    if new:
        pm.add_hookspecs(hookspecs.registration_specs(new))


def known_hooks() -> set[str]:
    """Every hook name forgeline knows: lifecycle and CLI hooks, and each declared kind's."""
    return {name for name in dir(hookspecs) if name.startswith(HOOK_PREFIX)} | {s.hook for s in kinds()}


def disabled_plugins(environ: Any = None) -> set[str]:
    """Entry-point or distribution names listed in ``FORGELINE_DISABLE_PLUGINS`` (comma-separated)."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _source(ep: metadata.EntryPoint) -> PluginSource:
    dist = ep.dist
    if dist is None:  # an entry point not backed by installed metadata (rare; e.g. tests)
        return PluginSource(ep.name, "unknown", "0")
    return PluginSource(ep.name, dist.metadata["Name"], dist.version)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _misspelled_hooks(plugin: object) -> list[str]:
    """``forgeline_*`` functions of a plugin that are not hooks forgeline knows.

    ``pm.check_pending`` only sees functions marked with ``@hookimpl``; an unmarked function
    with a hook-like name is just as certainly a mistake, and would otherwise be ignored.
    """
    known = known_hooks()
    owner = getattr(plugin, "__name__", None)
    return sorted(name for name, value in vars(plugin).items()
                  if name.startswith(HOOK_PREFIX) and callable(value) and name not in known
                  and getattr(value, "__module__", owner) == owner) if isinstance(plugin, ModuleType) else []


class _Collector:
    """Collects entries and broken plugins; raises at once when strict."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.catalog = Catalog()

    def fail(self, source: PluginSource, error: BaseException | str) -> None:
        broken = source.broken(error)
        if self.strict:
            raise InputError(f"plugin {broken.plugin!r} of distribution {broken.distribution} "
                             f"{broken.version} is broken: {broken.error} "
                             f"(fix or uninstall it, or set {DISABLE_ENV}={broken.distribution})")
        self.catalog.broken.append(broken)


def load_plugins(pm: pluggy.PluginManager, entry_points: Iterable[metadata.EntryPoint],
                 collector: _Collector, disabled: set[str]) -> dict[str, PluginSource]:
    """Load and register each entry point; returns registered plugin key -> source."""
    sources: dict[str, PluginSource] = {}
    for ep in entry_points:
        source = _source(ep)
        if source.key in sources:  # the same distribution seen twice on sys.path
            continue
        if disabled & {ep.name, source.distribution, _normalise(source.distribution)}:
            pm.set_blocked(source.key)
            continue
        try:
            plugin = ep.load()
        except Exception as e:  # noqa: BLE001 - any import failure makes the plugin broken, not the CLI
            collector.fail(source, e)
            continue
        add_kind_hookspecs(pm)  # the plugin may have declared a kind on import
        misspelled = _misspelled_hooks(plugin)
        if misspelled:
            collector.fail(source, f"UnknownHook: {', '.join(misspelled)} is not a forgeline hook "
                                   f"(known: see docs/plugins.md)")
            continue
        try:
            pm.register(plugin, name=source.key)
            pm.check_pending()  # earlier plugins passed, so a failure here is this plugin's
        except (pluggy.PluginValidationError, ValueError) as e:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            collector.fail(source, e)
            continue
        sources[source.key] = source
    return sources


def component_problem(kind: Kind | str, cls: Any) -> str | None:
    """Why ``cls`` cannot be registered as a ``kind`` (one line), or None when it can."""
    spec = spec_of(kind)
    base = spec.base
    if not isinstance(cls, type):
        return f"{spec.hook} returned {cls!r}, not a class"
    if not issubclass(cls, base):
        return f"{spec.hook} returned {cls.__qualname__}, which is not a subclass of {base.__qualname__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"{cls.__qualname__}.name {name!r} is not a kebab-case name like 'drop-missing-target'"
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        return f"{cls.__qualname__}.Params must be a pydantic model (subclass forgeline.core.Params)"
    if not cls.summary():
        return f"{cls.__qualname__} has no docstring: its first line is the component's summary"
    return None


def collect_components(pm: pluggy.PluginManager, sources: dict[str, PluginSource],
                       collector: _Collector) -> None:
    """Call each plugin's registration hooks one by one so every problem has an owner."""
    seen: dict[tuple[str, str, str], str] = {}
    for spec in kinds():
        caller = getattr(pm.hook, spec.hook)
        # pluggy lists implementations last-registered first; keep discovery order instead
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue  # wrappers decorate the call; they provide no classes of their own
            source = sources[impl.plugin_name]
            try:
                result = impl.function()
            except Exception as e:  # noqa: BLE001 - attributed to the plugin, the rest carry on
                collector.fail(source, f"{type(e).__name__}: {e} (in {spec.hook})")
                continue
            if result is not None:
                _add_classes(spec, result, source, collector, seen)


def _add_classes(spec: KindSpec, result: Any, source: PluginSource, collector: _Collector,
                 seen: dict[tuple[str, str, str], str]) -> None:
    """Check and catalog the classes one plugin's registration hook returned."""
    kind = as_kind(spec.kind)
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        collector.fail(source, f"TypeError: {spec.hook} returned {type(result).__name__}, "
                               f"expected a list of {kind} classes")
        return
    for cls in result:
        problem = component_problem(kind, cls)
        if problem:
            collector.fail(source, f"InvalidComponent: {problem}")
            continue
        key = (kind, cls.name, source.distribution)
        if key in seen:
            collector.fail(source, f"DuplicateComponent: {kind} {cls.name!r} is registered twice by "
                                   f"{source.distribution} (plugins {seen[key]!r} and {source.plugin!r})")
            continue
        seen[key] = source.plugin
        collector.catalog.entries.append(Entry(kind, cls.name, cls, source.distribution,
                                               source.version, source.plugin))


def build_catalog(strict: bool = False, entry_points: Iterable[metadata.EntryPoint] | None = None) -> Catalog:
    """Discover every plugin of the ``forgeline.plugins`` group and catalog its components.

    ``strict`` turns the first broken plugin into an :class:`InputError` naming its
    distribution. ``entry_points`` replaces discovery (for tests of the loading loop).
    """
    pm = make_plugin_manager()
    collector = _Collector(strict)
    eps = metadata.entry_points(group=GROUP) if entry_points is None else entry_points
    disabled = disabled_plugins()
    sources = load_plugins(pm, eps, collector, disabled)
    collect_components(pm, sources, collector)
    collector.catalog.disabled = tuple(sorted(disabled))
    collector.catalog.hook = pm.hook
    return collector.catalog
