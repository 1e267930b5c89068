"""``forgeline models ...``: the model registry on the command line (added via ``forgeline_cli_commands``)."""

from __future__ import annotations

import json
import os

import click

DEFAULT_DB = "forgeline-models.db"


def _registry(db: str):
    from .registry import ModelRegistry

    return ModelRegistry(db)


db_option = click.option("--db", default=lambda: os.environ.get("FORGELINE_MODELS_DB", DEFAULT_DB),
                         show_default=f"$FORGELINE_MODELS_DB or {DEFAULT_DB}", help="the registry's SQLite file")


@click.group()
def models() -> None:
    """Registry of trained model versions: register, list, promote, roll back."""


@models.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--name", help="model name (default: the pipeline's name)")
@click.option("--note", help="a note kept with the version")
@db_option
def register(run: str, name: str | None, note: str | None, db: str) -> None:
    """Register a finished run folder as a new version."""
    v = _registry(db).register_run(run, name, note)
    click.echo(f"registered {v['name']} version {v['version']} ({v['stage']})")


@models.command("list")
@click.option("--name", help="only this model")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@db_option
def list_(name: str | None, as_json: bool, db: str) -> None:
    """List registered versions with their stage and metrics."""
    versions = _registry(db).versions(name)
    if as_json:
        click.echo(json.dumps(versions, indent=2))
        return
    for v in versions:
        metrics = ", ".join(f"{k} {val:.4g}" for k, val in v["metrics"].items()
                            if isinstance(val, float) and k.startswith(("val_auc", "test_auc", "val_accuracy")))
        click.echo(f"{v['name']}\t{v['version']}\t{v['stage']}\t{metrics}\t{v['note'] or ''}")


@models.command()
@click.argument("name")
@click.argument("version", type=int)
@db_option
def promote(name: str, version: int, db: str) -> None:
    """Make VERSION the production version of NAME."""
    v = _registry(db).promote(name, version)
    click.echo(f"{v['name']} version {v['version']} is in production")


@models.command()
@click.argument("name")
@db_option
def rollback(name: str, db: str) -> None:
    """Put back the production version that came before the current one."""
    v = _registry(db).rollback(name)
    click.echo(f"rolled back: {v['name']} version {v['version']} is in production")
