"""``forgeline report RUN``: (re)build a run folder's ``report.html``."""

from __future__ import annotations

from pathlib import Path

import click

from . import Context, pass_context


@click.command("report")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False, exists=True, path_type=Path))
@pass_context
def report(ctx: Context, run_dir: Path) -> None:
    """(Re)build RUN's HTML report (RUN/report.html), from the run folder only."""
    from ..report import write_report
    from ..runfolder import read_manifest

    read_manifest(run_dir)  # a clear error when RUN is not a run folder
    out = write_report(run_dir, ctx.catalog.hook)
    click.echo(str(out))


COMMANDS = [report]
