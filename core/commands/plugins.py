"""``forgeline plugins list|show`` and ``forgeline new-plugin``.

Listing must stay as cheap as importing the plugin modules: rich and the scaffolder are
imported inside the commands, and nothing here touches torch, pandas or scikit-learn.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import click
from pydantic_core import PydanticUndefined

from ..catalog import Catalog, Entry, LookupProblem
from ..components import Kind
from ..kinds import as_kind, kinds
from . import Context
from ..errors import InputError


class KindChoice(click.Choice):
    """The declared kinds, read from the kind table when the option is used (a plugin may add one)."""

    def __init__(self) -> None:
        super().__init__([])

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if ctx is not None:  # plugins load with the catalog, and a plugin may declare a kind
            _catalog(ctx.find_root().obj)
        self.choices = [str(s.kind) for s in kinds()]
        return super().convert(value, param, ctx)

    def get_metavar(self, param, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.choices = [str(s.kind) for s in kinds()]
        return super().get_metavar(param, *args, **kwargs)


KIND_CHOICE = KindChoice()


def _catalog(obj: object) -> Catalog:
    """The catalog of the root group's context object (built once, on first use)."""
    if obj is None or not hasattr(obj, "catalog"):
        obj = click.get_current_context().find_root().ensure_object(Context)
    return obj.catalog


@click.group("plugins")
def plugins_group() -> None:
    """List and inspect the installed components."""


def _sorted(entries: list[Entry]) -> list[Entry]:
    order = {s.kind: i for i, s in enumerate(kinds())}
    return sorted(entries, key=lambda e: (order.get(e.kind, len(order)), e.name, e.distribution))


@plugins_group.command("list")
@click.option("--kind", type=KIND_CHOICE, help="Only components of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of components (broken plugins go to stderr).")
@click.pass_obj
def list_plugins(obj: object, kind: str | None, as_json: bool) -> None:
    """Every component: kind, name, distribution, version, summary; then broken plugins."""
    catalog = _catalog(obj)
    entries = _sorted(catalog.of_kind(as_kind(kind)) if kind else list(catalog))
    if as_json:
        rows = [{k: v for k, v in e.as_dict().items() if k != "plugin"} for e in entries]
        click.echo(json.dumps(rows, indent=2))
        for b in catalog.broken:
            click.echo(f"broken plugin {b.plugin!r} ({b.distribution} {b.version}): {b.error}", err=True)
        return
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    table = RichTable(title=f"{len(entries)} components", title_justify="left")
    for col in ("kind", "name", "distribution", "version"):
        table.add_column(col, no_wrap=True)
    table.add_column("summary", overflow="fold", ratio=1)
    for e in entries:
        table.add_row(str(e.kind), e.name, e.distribution, e.version, e.summary)
    console.print(table)
    if catalog.broken:
        broken = RichTable(title=f"{len(catalog.broken)} broken plugins", title_justify="left")
        for col in ("plugin", "distribution", "version", "error"):
            broken.add_column(col, overflow="fold")
        for b in catalog.broken:
            broken.add_row(b.plugin, b.distribution, b.version, b.error)
        console.print(broken)


def resolve(catalog: Catalog, ref: str, kind: str | None = None) -> Entry:
    """The entry ``ref`` (``name`` or ``provider:name``) names, or an InputError saying why not."""
    if kind:
        try:
            return catalog.get(as_kind(kind), ref)
        except LookupProblem as e:
            raise InputError(f"plugins show: {e}") from None
    found = catalog.find(ref)
    if len(found) == 1:
        return found[0]
    if not found:
        name = ref.rpartition(":")[2]
        known = sorted({e.name for e in catalog})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see 'forgeline plugins list'"
        raise InputError(f"plugins show: no component named {ref!r}{hint}")
    options = ", ".join(f"{e.kind} '{e.distribution}:{e.name}'" for e in _sorted(found))
    raise InputError(f"plugins show: {ref!r} is ambiguous ({options}); pass --kind or write provider:name")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_params(entry: Entry) -> list[dict[str, Any]]:
    """Each parameter of a component: name, type, default, required, description."""
    rows = []
    for name, f in entry.cls.Params.model_fields.items():
        if f.default is not PydanticUndefined:
            default, required = f.default, False
        elif f.default_factory is not None:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        rows.append({"name": name, "type": _type_name(f.annotation), "default": default,
                     "required": required, "description": f.description or ""})
    return rows


def describe(entry: Entry) -> dict[str, Any]:
    """Everything ``plugins show`` prints about a component, JSON-ready."""
    import inspect

    return {"kind": str(entry.kind), "name": entry.name, "distribution": entry.distribution,
            "version": entry.version, "plugin": entry.plugin, "summary": entry.summary,
            "doc": inspect.cleandoc(entry.cls.__doc__ or ""),
            "modalities": sorted(str(m) for m in entry.cls.modalities),
            "params": describe_params(entry)}


@plugins_group.command("show")
@click.argument("name")
@click.option("--kind", type=KIND_CHOICE, help="The component's kind, when the name is used by several kinds.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.pass_obj
def show_plugin(obj: object, name: str, kind: str | None, as_json: bool) -> None:
    """A component's provider, documentation and parameters (types, defaults, descriptions)."""
    info = describe(resolve(_catalog(obj), name, kind))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    console.print(f"[bold]{info['name']}[/bold]  ({info['kind']}, from {info['distribution']} "
                  f"{info['version']}, plugin {info['plugin']})")
    console.print(info["doc"] or info["summary"], markup=False, highlight=False, soft_wrap=True)
    console.print(f"accepts: {', '.join(info['modalities']) or 'any modality'}")
    if not info["params"]:
        console.print("parameters: none")
        return
    table = RichTable(title="parameters", title_justify="left")
    for col in ("name", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for p in info["params"]:
        table.add_row(p["name"], p["type"], "(required)" if p["required"] else repr(p["default"]), p["description"])
    console.print(table)


@click.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder in which the plugin's folder NAME is created.")
@click.option("--kind", default=Kind.CLEANER.value, show_default=True,
              help="Kind of the example component: cleaner, feature-transform or monitor.")
def new_plugin(name: str, directory: Path, kind: str) -> None:
    """Scaffold a plugin distribution NAME that installs and passes the conformance kit."""
    from ...registry.scaffold import scaffold

    root = scaffold(name, directory, kind)
    click.echo(f"wrote {root}")
    click.echo(f"next: pip install -e {root} && (cd {root} && python -m pytest -q)")


COMMANDS = [plugins_group, new_plugin]
