"""The ``forgeline`` command line: the composition root.

The CLI (through ``commands.Context``) and ``core/api.py`` are the composition roots: the
only modules that build the registry (plugin manager + catalog) and hand the catalog to the
rest of ``core``. Input problems exit 2 with one line each, failed runs exit 1, and no
traceback reaches the user (``FORGELINE_DEBUG=1`` shows it).
"""

from __future__ import annotations

import os
import sys

import click

from .commands import Context
from .errors import InputError, StageError, Terminated

EXIT_FAILED, EXIT_INPUT = 1, 2


class ForgelineGroup(click.Group):
    """Turns forgeline's errors into exit codes and one-line messages; adds plugin commands."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as e:
            for p in e.problems:
                click.echo(str(p), err=True)
            ctx.exit(EXIT_INPUT)
        except StageError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str):
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._add_plugin_commands(ctx)
            cmd = super().get_command(ctx, name)
        return cmd

    def _add_plugin_commands(self, ctx: click.Context) -> None:
        if getattr(self, "_plugins_added", False):
            return
        self._plugins_added = True
        obj = ctx.ensure_object(Context)
        hook = obj.catalog.hook
        if hook is None:
            return
        for commands in hook.forgeline_cli_commands():
            for cmd in commands or ():
                if cmd.name in self.commands:
                    click.echo(f"warning: a plugin's command {cmd.name!r} clashes with a built-in; skipped", err=True)
                else:
                    self.add_command(cmd)


@click.group(cls=ForgelineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="forgeline")
@click.option("--strict", is_flag=True, help="Treat a broken plugin as an error.")
@click.pass_context
def cli(ctx: click.Context, strict: bool) -> None:
    """forgeline: prepare data and train models efficiently, from plugins."""
    ctx.obj = Context(strict=strict)


def _register_builtin_commands() -> None:
    from .commands import pipeline, plugins, report, run
    for module in (plugins, pipeline, run, report):
        for cmd in module.COMMANDS:
            cli.add_command(cmd)


_register_builtin_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="forgeline", standalone_mode=True)
    except SystemExit:
        raise
    except Terminated:  # SIGTERM: the run folder already says so
        sys.exit(128 + 15)
    except Exception as e:  # a bug, not bad input: say so in one line unless debugging
        if os.environ.get("FORGELINE_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e} (set FORGELINE_DEBUG=1 for the traceback)", err=True)
        sys.exit(EXIT_FAILED)


def rank_main() -> None:
    """A rank started by torchrun: :func:`main`, then leave without the interpreter's teardown.

    After a run that succeeded (process group destroyed, run folder closed), the C++ static
    destructors at interpreter exit can still abort a rank whose gloo threads are alive
    ("terminate called without an active exception": about one exit in ten on a busy
    2-core machine), and torchrun would then report the whole run as failed. Nothing is
    left to do at that point but flush the output, so the rank exits with ``os._exit``.
    """
    try:
        main()
        code: int | str | None = 0
    except SystemExit as e:
        code = e.code
    if isinstance(code, str):  # sys.exit("message") prints the message, as the interpreter would
        print(code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":  # pragma: no cover - torchrun starts ranks through this
    rank_main()
