"""``console``: progress and a live metrics line on stderr, drawn with rich."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import Field

from forgeline.core import Monitor, Params, RunInfo

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console as RichConsole

#: fields shown first in the metrics line, with their formats; other numeric fields follow
_FORMATS = {"loss": "{:.4f}", "train_loss": "{:.4f}", "val_loss": "{:.4f}", "val_accuracy": "{:.4f}",
            "val_auc": "{:.4f}", "lr": "{:.2e}", "grad_norm": "{:.3g}", "samples_per_s": "{:,.0f}",
            "step_time_s": "{:.4f}", "loss_scale": "{:g}", "skipped_steps": "{:d}"}
_NOT_METRICS = {"event", "time", "step", "epoch", "name", "status", "stage"}


def metrics_text(record: Mapping[str, Any], limit: int = 12) -> str:
    """``key value`` pairs of a record's numeric fields, known ones first, e.g. ``loss 0.3412``."""
    keys = [k for k in _FORMATS if k in record] + sorted(k for k in record if k not in _FORMATS)
    parts = []
    for key in keys:
        value = record[key]
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        fmt = _FORMATS.get(key, "{:.4g}")
        try:
            parts.append(f"{key} {fmt.format(value)}")
        except (ValueError, TypeError):  # e.g. an int format given a float
            parts.append(f"{key} {value:.4g}")
        if len(parts) == limit:
            break
    return "  ".join(parts)


class Console(Monitor):
    """Progress and a live metrics line on stderr (rich); epochs, stages and the run summary as lines.

    On a terminal the step line is redrawn in place a few times a second; elsewhere (a log
    file, CI) a step line is printed at most every ``line_every_s`` seconds.
    """

    name = "console"

    class Params(Params):
        quiet: bool = Field(False, description="print only the run's end and failed stages (no live line)")
        refresh_per_second: float = Field(4.0, gt=0, le=30, description="redraws per second of the live line "
                                          "on a terminal")
        line_every_s: float = Field(10.0, ge=0, description="off a terminal: seconds between printed step lines "
                                    "(0 = every logged step)")

    def __init__(self, params: Any = None, *, console: RichConsole | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._console = console  # injectable for tests and embedding; default: a stderr console
        self._live: Any = None

    def open(self, run: RunInfo) -> None:
        from rich.console import Console as RichConsole
        from rich.live import Live

        self.console = self._console or RichConsole(stderr=True)
        self.run_name = run.name
        self.stage = ""
        self.last_step: Mapping[str, Any] | None = None
        self.last_system: Mapping[str, Any] | None = None
        self._last_line = float("-inf")
        self.started = time.monotonic()
        if not self.params.quiet and self.console.is_terminal:
            # log() only stores the latest record; rich's refresh thread renders it, so logging stays cheap
            self._live = Live(get_renderable=self._render, console=self.console, transient=True,
                              refresh_per_second=self.params.refresh_per_second, redirect_stdout=False,
                              redirect_stderr=False)
            self._live.start()

    def _status_line(self) -> str:
        from rich.markup import escape

        parts = [f"[bold]{escape(self.run_name)}[/]", f"{time.monotonic() - self.started:,.0f}s"]
        if self.stage:
            parts.append(escape(self.stage))
        if self.last_step is not None:
            step = self.last_step
            parts.append(f"epoch {step.get('epoch', '?')} step {step.get('step', '?')}")
            parts.append(metrics_text(step))
        if self.last_system is not None:
            parts.append(metrics_text({k: v for k, v in self.last_system.items()
                                       if k in ("cpu_percent", "process_rss_mb", "cost_usd")}))
        return " | ".join(p for p in parts if p)

    def _render(self) -> Any:
        from rich.text import Text

        return Text.from_markup(self._status_line())

    def _print(self, markup: str) -> None:
        # soft_wrap: one record stays one line, also in a log file (rich wraps at 80 columns there)
        self.console.print(markup, highlight=False, soft_wrap=True)

    def log(self, record: Mapping[str, Any]) -> None:
        from rich.markup import escape

        event = record.get("event")
        if event == "step":
            self.last_step = record
            if self._live is None and not self.params.quiet:
                now = time.monotonic()
                if now - self._last_line >= self.params.line_every_s:
                    self._last_line = now
                    self._print(self._status_line())
        elif event == "system":
            self.last_system = record
        elif event == "stage":
            name = escape(str(record.get("name", "")))
            status = record.get("status", "")
            where = f"[{record['stage']}] " if record.get("stage") else ""
            if status == "started":
                self.stage = f"{where}{record.get('name', '')}"
                return
            self.stage = ""
            if self.params.quiet and status != "failed":
                return
            mark = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]"}.get(status, "•")
            seconds = record.get("seconds")
            took = f" {seconds:.2f}s" if isinstance(seconds, (int, float)) else ""
            summary = record.get("summary") or record.get("report")
            detail = metrics_text(summary, limit=6) if isinstance(summary, Mapping) else escape(str(summary or ""))
            self._print(f"{mark} {escape(where)}{name} {escape(str(status))}{took}  {detail}".rstrip())
        elif event in ("epoch", "latency") and not self.params.quiet:
            label = f"epoch {record.get('epoch', '?')}" if event == "epoch" else "inference"
            self._print(f"[cyan]{label}[/]  {metrics_text(record, limit=16)}")
        elif event == "run" and (record.get("status") != "started" or not self.params.quiet):
            status = str(record.get("status", ""))
            colour = {"succeeded": "green", "failed": "red"}.get(status, "bold")
            self._print(f"[{colour}]run {escape(self.run_name)} {escape(status)}[/]")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
