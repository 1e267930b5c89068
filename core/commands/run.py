"""``forgeline run`` (locally or over N processes) and ``forgeline apply`` (a run's fitted stages on new data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from . import Context, pass_context
from ..errors import InputError, raise_on_sigterm
from ..validation import assembly_options, pipeline_from_options


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Folder that receives the run folder.")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a pipeline value (repeatable).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Continue a killed or failed run folder from its last finished stage (and training "
                   "from its latest checkpoint).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes to train with (started through torch.distributed.run).")
@click.option("--nnodes", default=None, help="torchrun: number of machines (or MIN:MAX).")
@click.option("--node-rank", type=int, default=None, help="torchrun: this machine's rank.")
@click.option("--rdzv-endpoint", default=None, help="torchrun: HOST:PORT of the rendezvous.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (implies --quiet).")
@assembly_options
@pass_context
def run(ctx: Context, file: Path | None, out: Path, overrides: tuple[str, ...], resume: Path | None, nproc: int,
        nnodes: str | None, node_rank: int | None, rdzv_endpoint: str | None, run_dir: Path | None,
        quiet: bool, as_json: bool, **assembly) -> None:
    """Run a pipeline FILE (or one assembled from --data/--clean/--train ...) into a run folder."""
    from ..resume import resumable_manifest
    from ..runfolder import new_run_dir, read_manifest
    from ..runner import Runner
    from ..validation import load_plan

    given = {k: v for k, v in assembly.items() if v not in (None, (), [])}
    base = None  # where relative data paths resolve, when the source is not a file
    if resume is not None:
        if file or given:
            raise InputError("--resume: give only the run folder; its pipeline is taken from its manifest")
        manifest = resumable_manifest(resume)
        if manifest["status"] == "succeeded":
            click.echo(f"{resume}: this run already finished (succeeded); nothing to resume, nothing changed", err=True)
            if as_json:
                _print_summary(resume, manifest)
            return
        source = manifest["pipeline"]["given"]
        base = Path(manifest["source"]).parent if manifest.get("source") else None
    elif file is not None:
        if given:
            raise InputError(f"{file}: give a pipeline file or --data/--clean/--train options, not both")
        source = file
    elif given:
        source = pipeline_from_options(**assembly)
    else:
        raise InputError("run: give a pipeline FILE, or assemble one with --data ... --train ... (see --help)")

    in_rank = "LOCAL_RANK" in os.environ
    nodes = int(nnodes.rpartition(":")[2]) if nnodes and nnodes.rpartition(":")[2].isdigit() else 1
    plan = load_plan(source, ctx.catalog, overrides, nproc=int(os.environ.get("WORLD_SIZE", nproc * nodes)),
                     base=base)
    if nproc > 1 and not in_rank:
        from ..train.launch import launch

        run_dir = resume or run_dir or new_run_dir(out, plan.pipeline.name)
        args = ["run", *([str(file)] if file else []), "--run-dir", str(run_dir), "--out", str(out),
                *(a for o in overrides for a in ("--set", o)), *(["--resume", str(resume)] if resume else []),
                *(["--quiet"] if quiet or as_json else [])]
        if file is None and resume is None:
            args += _assembly_args(assembly)
        torchrun = [*(["--nnodes", nnodes] if nnodes else []), *(["--node-rank", str(node_rank)] if node_rank is not None else []),
                    *(["--rdzv-endpoint", rdzv_endpoint] if rdzv_endpoint else [])]
        code = launch(args, nproc, torchrun)
        if as_json:
            _print_summary(run_dir, read_manifest(run_dir) if (run_dir / "manifest.json").exists() else {"status": "failed"})
        raise SystemExit(code)

    raise_on_sigterm()  # a terminated run still writes how it ended
    runner = Runner(plan, ctx.catalog, out=out, run_dir=run_dir, quiet=quiet or as_json, resume=resume)
    try:
        runner.run()
    finally:  # a failed run prints its summary too: scripts read the status, not an empty stdout
        if as_json and runner.folder.writes:
            _print_summary(runner.dir, runner.folder.manifest)


def _assembly_args(assembly: dict) -> list[str]:
    """The assembly options again, as command-line arguments for the ranks."""
    args = []
    for key, value in assembly.items():
        if value in (None, (), []):
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, (list, tuple)) else [value]
        args += [flag, ",".join(map(str, values))]
    return args


def _print_summary(run_dir: Path, manifest: dict) -> None:
    error = {"error": manifest["error"]} if manifest.get("error") else {}
    click.echo(json.dumps({"run": str(run_dir), "status": manifest.get("status"), **error,
                           "metrics": manifest.get("metrics", {}),
                           "stages": [{k: s.get(k) for k in ("id", "name", "status", "seconds")}
                                      for s in manifest.get("stages", [])]}, indent=2))


@click.command("apply")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the cleaned rows (.csv or .parquet); removed rows go beside it.")
@pass_context
def apply(ctx: Context, run_dir: Path, data: Path, output: Path) -> None:
    """Clean and transform new DATA (.csv/.parquet) with RUN_DIR's fitted stages.

    \b
    What is trusted: the installed forgeline and plugins (the code). What is not: the run
    folder. Its fitted state is read as data (JSON, numpy .npy without pickle, scikit-learn
    objects through skops limited to scikit-learn/numpy types); each component's class comes
    from the installed plugins by name, files outside RUN_DIR are refused, and DATA's columns
    are checked against the run's schema before any state is read. Nothing in RUN_DIR runs.
    """
    import pandas as pd

    from ..api import open_run

    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
    for path in (data, output):
        if path.suffix not in readers:
            raise InputError(f"{path}: unknown format {path.suffix!r}; use .csv or .parquet")
    fitted = open_run(run_dir, ctx.catalog)
    frame = readers[data.suffix](data)
    fitted.check_columns(list(frame.columns), str(data))
    result = fitted.apply(frame)
    write = (lambda f, p: f.to_csv(p)) if output.suffix == ".csv" else (lambda f, p: f.to_parquet(p))
    write(result.table.frame, output)
    removed = output.with_name(f"{output.stem}.removed{output.suffix}")
    if len(result.removed):
        write(result.removed, removed)
    click.echo(f"{len(frame)} rows in, {len(result.table)} written to {output}, {len(result.removed)} removed"
               + (f" (see {removed})" if len(result.removed) else ""), err=True)


COMMANDS = [run, apply]
