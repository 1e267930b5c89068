"""The registry: discovers plugins through entry points and builds the component catalog.

``build_catalog`` is what the CLI uses; ``forgeline.registry.conformance`` is the kit plugin
authors run in their tests. Nothing heavy is imported here.
"""

from .discovery import (DISABLE_ENV, GROUP, PluginSource, build_catalog, component_problem,
                        disabled_plugins, make_plugin_manager)

__all__ = ["DISABLE_ENV", "GROUP", "PluginSource", "build_catalog", "component_problem",
           "disabled_plugins", "make_plugin_manager"]
