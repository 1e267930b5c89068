"""Calling lifecycle hooks so that a hook that raises is named: hook, plugin, distribution.

pluggy runs every implementation in one call and lets an exception through without saying
whose it was; the culprit is the innermost implementation whose code is on the exception's
traceback (wrappers included, as pluggy runs them on the same stack).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .errors import ForgelineError, StageError


class HookError(StageError):
    """A lifecycle hook implementation raised: exit code 1, naming the hook and its plugin."""

    def __init__(self, hook: str, where: str, plugin: str, distribution: str, error: BaseException) -> None:
        self.stage, self.component, self.provider, self.error = where, plugin, distribution, error
        self.hook = hook
        ForgelineError.__init__(self, f"stage {where!r} failed in hook {hook} of plugin {plugin!r} "
                                      f"(from {distribution}): {type(error).__name__}: {error}")


class LifecycleHooks:
    """The lifecycle hooks of a run (no-ops without a plugin manager)."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay

    def call(self, name: str, where: str, **kwargs: Any) -> None:
        """Call hook ``name`` (``where``: the stage id, or ``run``); a raising hook becomes a HookError."""
        if self.relay is None:
            return
        caller = getattr(self.relay, name)
        try:
            caller(**kwargs)
        except Exception as e:
            plugin = culprit(caller, e.__traceback__)
            distribution, _, entry_point = plugin.rpartition(":")  # the registry names plugins dist:entry-point
            raise HookError(name, where, entry_point, distribution or "unknown distribution", e) from e


def culprit(caller: Any, tb: TracebackType | None) -> str:
    """The registered name of the plugin whose implementation of ``caller`` raised."""
    codes = {}
    for impl in caller.get_hookimpls():
        function = getattr(impl.function, "__func__", impl.function)
        code = getattr(function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    found = "unknown"
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found
