"""The run report: ``report.html``, one self-contained page rendered from a run folder only.

Built at the end of every ``forgeline run`` and by ``forgeline report RUN``. Sections come
from the manifest, ``metrics.jsonl``, ``quarantine/`` and the artifact files stages write
(docs/report.md), plus the sections plugins return from ``forgeline_report_sections``.
The page holds no script and no external URL: plots are inline PNGs, the CSS is inline.
"""

from __future__ import annotations

import html
import json
import sys
import time
from pathlib import Path
from typing import Any

from .model import ReportRun, ReportSection

__all__ = ["ReportRun", "ReportSection", "figure_img", "render", "write_artifact", "write_report",
           "write_report_or_warn"]

HOOK = "forgeline_report_sections"


def render(run: ReportRun, hook: Any = None) -> str:
    """The report page of ``run``: the built-in sections present in it, then plugins' sections."""
    from . import sections
    from .markup import page

    out: list[ReportSection] = []
    for build in sections.BUILTIN:
        try:
            section = build(run)
        except Exception as e:  # noqa: BLE001 - one section's bug must not cost the whole report
            section = _broken(build.__name__.replace("_", " ").capitalize(), f"forgeline ({build.__name__})", e)
        if section is not None:
            out.append(section)
    out += plugin_sections(run, hook)
    m = run.manifest
    subtitle = f"run folder {html.escape(run.dir.name)} · status {html.escape(str(m.get('status', 'unknown')))}"
    return page(f"forgeline run: {m.get('name', run.dir.name)}", subtitle, out)


def plugin_sections(run: ReportRun, hook: Any) -> list[ReportSection]:
    """Every plugin's sections, called one implementation at a time so a failure names its plugin."""
    caller = getattr(hook, HOOK, None) if hook is not None else None
    if caller is None:
        return []
    out: list[ReportSection] = []
    for impl in reversed(caller.get_hookimpls()):  # registration order
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            result = impl.function(**{a: run for a in impl.argnames})
            if result is None:
                continue
            if isinstance(result, (str, bytes, ReportSection)) or not all(isinstance(s, ReportSection) for s in result):
                raise TypeError(f"{HOOK} returned {type(result).__name__}, expected a list of ReportSection")
            out += result
        except Exception as e:  # noqa: BLE001 - attributed to the plugin; the report carries on
            out.append(_broken(f"Plugin {impl.plugin_name}", impl.plugin_name, e))
    return out


def _broken(title: str, owner: str, e: BaseException) -> ReportSection:
    from .markup import esc

    return ReportSection(title, f'<div class="error">this section could not be built: {esc(owner)}: '
                                f"{esc(type(e).__name__)}: {esc(e)}</div>")


def write_report(run_dir: Path, hook: Any = None) -> Path:
    """Render ``run_dir``'s report into ``run_dir/report.html`` (atomically); returns the file."""
    from ..runfolder import write_atomic

    run_dir = Path(run_dir)
    text = render(ReportRun(run_dir), hook)
    out = run_dir / "report.html"
    write_atomic(out, text.encode())
    return out


def write_report_or_warn(run_dir: Path, hook: Any = None, quiet: bool = False) -> Path | None:
    """:func:`write_report`, for the end of a run: a failure is one warning line, never an error."""
    try:
        t = time.perf_counter()
        out = write_report(run_dir, hook)
        if not quiet:
            print(f"report: {out} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        return out
    except Exception as e:  # noqa: BLE001 - a report never turns a finished run into a failed one
        print(f"warning: the run report could not be written: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def figure_img(fig: Any, alt: str = "plot") -> str:
    """A matplotlib figure as an inline PNG ``<img>`` tag, for plugins' report sections."""
    from .plots import img

    return img(fig, alt)


def write_artifact(folder: Path | None, name: str, data: Any) -> Path | None:
    """Write a report artifact (``samples.json``, ``importance.json``...) into a stage's artifact folder.

    ``folder`` is the stage's ``ctx.artifacts`` (None outside a run: nothing is written);
    numpy arrays and scalars in ``data`` become JSON lists and numbers.
    """
    if folder is None:
        return None
    from ..runfolder import _json_default, write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    write_atomic(out, json.dumps(data, default=_json_default).encode())
    return out
