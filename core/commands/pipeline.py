"""Commands on pipeline files: ``validate``, ``explain``, ``schema`` and ``init``.

Problems raise :class:`~forgeline.core.errors.InputError`; the CLI root prints one line per
problem and exits 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from . import pass_context
from ..errors import InputError, Problem
from ..validation import ASSEMBLY_FIELDS, Plan, looks_like_path, assembly_options, load_plan, pipeline_from_options

_overrides = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                          help="Override a value, e.g. --set train.optimizer.lr=0.01 (repeatable).")
_nproc = click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
                      help="Processes the run would use (checked against the parallel strategy).")
_file = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))


def _stage_names(plan: Plan) -> str:
    return " -> ".join(r.entry.name for r in plan.stages())


@click.command()
@_file
@_overrides
@_nproc
@pass_context
def validate(ctx, file: Path, overrides: tuple[str, ...], nproc: int) -> None:
    """Check a pipeline file: every problem at once, one line each (exit 2 if any)."""
    plan = load_plan(file, ctx.catalog, overrides, nproc=nproc)
    click.echo(f"{file}: valid ({_stage_names(plan)})")


@click.command()
@_file
@_overrides
@_nproc
@click.option("--json", "as_json", is_flag=True, help="Print the resolved pipeline as JSON.")
@pass_context
def explain(ctx, file: Path, overrides: tuple[str, ...], nproc: int, as_json: bool) -> None:
    """Show the assembled pipeline: stages, resolved components, providers, full parameters."""
    from ..authoring import explain as explain_plan

    plan = load_plan(file, ctx.catalog, overrides, nproc=nproc)
    click.echo(json.dumps(plan.resolved(), indent=2, default=str) if as_json else explain_plan(plan))


@click.command()
@pass_context
def schema(ctx) -> None:
    """Print the JSON Schema of pipeline files, every installed component's parameters included."""
    from ..authoring import pipeline_schema

    click.echo(json.dumps(pipeline_schema(ctx.catalog), indent=2))


@click.command()
@_file
@assembly_options
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@pass_context
def init(ctx, file: Path, force: bool, **options) -> None:
    """Write a pipeline file from named components, every parameter at its default and described."""
    from ..authoring import init_yaml

    if file.exists() and not force:
        raise InputError([Problem("", "already exists; pass --force to overwrite it", str(file))])
    raw = pipeline_from_options(**{k: options.pop(k) for k in ASSEMBLY_FIELDS})
    folder = file.resolve().parent
    source = raw["data"]["source"]
    if looks_like_path(source):
        # given relative to here; written relative to the pipeline file, as validation reads it
        relative = os.path.relpath(Path(source).expanduser().resolve(), folder)
        raw["data"]["source"] = relative if os.sep in relative else f".{os.sep}{relative}"
    text = init_yaml(raw, ctx.catalog, base=folder)
    folder.mkdir(parents=True, exist_ok=True)
    file.write_text(text, encoding="utf-8")
    click.echo(f"wrote {file}; check it with: forgeline validate {file}")


COMMANDS = [validate, explain, schema, init]
