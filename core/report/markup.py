"""Small HTML builders that escape every value they are given, and the page around the sections.

Hand-written rather than a template engine: the page is a dozen tables and images, and
keeping every run value behind :func:`esc` (``html.escape``) makes the escaping easy to audit.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable, Sequence

from .model import ReportSection


def esc(value: Any) -> str:
    """A run value as text in HTML (quotes escaped too: it may land in an attribute)."""
    return html.escape(fmt(value), quote=True)


def fmt(value: Any) -> str:
    """Numbers short and readable; everything else as its string."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """A table; cells are escaped unless given as :class:`Raw` (markup made here)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{cell(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


class Raw(str):
    """Markup built by the report itself (already escaped); :func:`cell` passes it through."""


def cell(value: Any) -> str:
    return str(value) if isinstance(value, Raw) else esc(value)


def link(href: str, text: Any) -> Raw:
    """A link to a file inside the run folder; anything else (a scheme, an absolute path, ``..``)
    is shown as text, so a doctored manifest cannot plant a ``javascript:`` or remote link."""
    if not re.fullmatch(r"[\w][\w.\-/]*", str(href)) or ".." in str(href):
        return Raw(esc(text))
    return Raw(f'<a href="{esc(href)}">{esc(text)}</a>')


def badge(status: Any) -> Raw:
    s = str(status)
    kind = {"succeeded": "ok", "failed": "bad", "running": "warn"}.get(s, "muted")
    return Raw(f'<span class="badge {kind}">{esc(s)}</span>')


def note(text: str, kind: str = "muted") -> str:
    return f'<p class="note {kind}">{esc(text)}</p>'


CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--acc:#0969da}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg)}
header{padding:18px 32px;background:var(--bg);border-bottom:1px solid var(--line)}
header h1{margin:0 0 4px;font-size:22px}header .sub{color:var(--muted)}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:6px 32px;z-index:1}
nav a{margin-right:14px;color:var(--acc);text-decoration:none;font-size:13px}
main{padding:8px 32px 40px;max-width:1280px}
section{margin:18px 0 28px}h2{font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:var(--bg)}table.kv th{background:var(--bg);font-weight:600}
td{max-width:520px;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;color:#fff;background:var(--muted)}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}
.row{display:flex;flex-wrap:wrap;gap:32px;align-items:flex-start}.row h3{margin-top:0}
.note{color:var(--muted)}.note.bad{color:var(--bad)}
.error{border:1px solid var(--bad);background:#ffebe9;padding:10px 14px;border-radius:6px}
pre{background:var(--bg);padding:8px;overflow:auto;font-size:12px;white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-width:100%;border:1px solid var(--line);border-radius:4px}
.samples{display:flex;flex-wrap:wrap;gap:12px}.sample{border:1px solid var(--line);border-radius:4px;padding:6px;max-width:560px}
.sample img{image-rendering:pixelated;width:96px;height:96px;object-fit:contain}
"""


def page(title: str, subtitle: str, sections: Sequence[ReportSection]) -> str:
    """The whole document: inline CSS, a navigation bar, the sections. No script, no external URL."""
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.html}</section>' for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{CSS}</style></head><body>'
            f"<header><h1>{esc(title)}</h1><div class=\"sub\">{subtitle}</div></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>")
