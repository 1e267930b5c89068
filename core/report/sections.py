"""The built-in sections of the run report, one function each: ``fn(run) -> ReportSection | None``.

A section returns None when the run has nothing for it (no cleaning stage, no training
records...), so absent parts of a pipeline leave no empty headings. Each reads the run
folder only: the manifest's stage reports, ``metrics.jsonl``, ``quarantine/`` and the
artifact files described in docs/report.md.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Callable

from . import plots
from .markup import Raw, badge, esc, fmt, kv, link, note, table
from .model import ReportRun, ReportSection

SPLIT_COLOURS = {"train": "#0969da", "valid": "#bf8700", "test": "#8250df"}
MAX_SAMPLES = 12
_NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def _when(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "—"
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def planned_stages(run: ReportRun) -> list[tuple[str, dict[str, Any]]]:
    """``(stage id, resolved component)`` for every stage the pipeline asked for, in order."""
    r = run.manifest.get("pipeline", {}).get("resolved") or {}
    out = []
    source = (r.get("data") or {}).get("source")
    if isinstance(source, dict):
        out.append(("data", source))
    for section in ("clean", "augment", "features"):
        out += [(f"{section}.{i}", c) for i, c in enumerate(r.get(section) or []) if isinstance(c, dict)]
    model = (r.get("train") or {}).get("model")
    if isinstance(model, dict):
        out.append(("train", model))
    if isinstance(r.get("tune"), dict):
        out.append(("tune", r["tune"]))
    out += [(f"compress.{i}", c) for i, c in enumerate(r.get("compress") or []) if isinstance(c, dict)]
    return out


# --------------------------------------------------------------------------- overview / error

def overview(run: ReportRun) -> ReportSection:
    m = run.manifest
    started, finished = m.get("started"), m.get("finished")
    took = f"{finished - started:.1f} s" if _num(started) and _num(finished) else "—"
    pairs = [("status", badge(m.get("status", "unknown"))), ("started", _when(started)),
             ("finished", _when(finished)), ("duration", took), ("pipeline file", m.get("source")),
             ("seed", m.get("seed")), ("processes", m.get("world_size"))]
    body = kv(pairs)
    metrics = {k: v for k, v in (m.get("metrics") or {}).items() if _num(v)}
    if metrics:
        body += "<div><h3>Final metrics</h3>" + table(["metric", "value"], sorted(metrics.items())) + "</div>"
    return ReportSection("Overview", f'<div class="row">{body}</div>', "overview")


def error(run: ReportRun) -> ReportSection | None:
    m = run.manifest
    if m.get("status") == "succeeded":
        return None
    failed = [s for s in run.stages if s.get("status") == "failed"]
    done = [s for s in run.stages if s.get("status") == "succeeded"]
    planned = planned_stages(run)
    msg = m.get("error") or (failed[0].get("error") if failed else None)
    if m.get("status") == "running":
        msg = msg or "the run did not finish (killed, or still running when the report was made)"
    body = f'<div class="error"><strong>{esc(msg or "the run failed")}</strong></div>'
    if failed:
        s = failed[0]
        body += f"<p>Failed in stage <code>{esc(s.get('id'))}</code> ({esc(s.get('name'))}, " \
                f"provider {esc(s.get('provider'))}).</p>"
        if s.get("traceback"):
            body += f"<pre>{esc(''.join(map(str, s['traceback'])))}</pre>"
    body += f"<p>{len(done)} of {len(planned) or len(run.stages)} stages finished; see the pipeline below.</p>"
    return ReportSection("Error", body, "error")


# --------------------------------------------------------------------------- pipeline

def pipeline(run: ReportRun) -> ReportSection:
    m = run.manifest
    entries = {s.get("id"): s for s in run.stages}
    rows = []
    for stage_id, comp in planned_stages(run) or [(s.get("id"), {}) for s in run.stages]:
        e = entries.get(stage_id, {})
        rows.append([stage_id, comp.get("use", e.get("name")), comp.get("provider", e.get("provider")),
                     comp.get("version"), badge(e.get("status", "not reached")), e.get("seconds"),
                     comp.get("with") or {}])
    body = table(["stage", "component", "provider", "version", "status", "seconds", "parameters"], rows)
    timed = [(s.get("id"), s["seconds"]) for s in run.stages if _num(s.get("seconds"))]
    if len(timed) > 1:
        fig, ax = plots.figure(6.5, 0.35 * len(timed) + 1.0)
        ax.barh([str(t[0]) for t in timed][::-1], [t[1] for t in timed][::-1], color="#0969da")
        ax.set_xlabel("seconds")
        ax.set_title("Time per stage")
        body += f'<div class="plots">{plots.img(fig, "time per stage")}</div>'
    train = (m.get("pipeline", {}).get("resolved") or {}).get("train")
    if isinstance(train, dict):
        pairs = []
        for k, v in train.items():
            if k == "model":
                continue
            if isinstance(v, dict) and "use" in v:
                v = Raw(f"{esc(v['use'])} <span class=note>({esc(v.get('provider'))} {esc(v.get('version'))})"
                        f"</span> {esc(v.get('with') or '')}")
            pairs.append((k, v))
        body += "<h3>Training configuration</h3>" + kv(pairs)
    monitors = (m.get("pipeline", {}).get("resolved") or {}).get("monitor") or []
    if monitors:
        body += "<h3>Monitors</h3>" + table(["monitor", "provider", "version", "parameters"],
                                            [[x.get("use"), x.get("provider"), x.get("version"), x.get("with") or {}]
                                             for x in monitors if isinstance(x, dict)])
    inputs = m.get("inputs") or {}
    if inputs:
        body += "<h3>Inputs</h3>" + table(["input", "sha256", "rows", "columns", "parameters"],
                                          [[n, i.get("sha256"), i.get("rows"), i.get("columns"), i.get("params") or {}]
                                           for n, i in inputs.items() if isinstance(i, dict)])
    env = m.get("environment") or {}
    if env:
        body += "<h3>Environment</h3>" + kv(env.items())
    return ReportSection("Pipeline", body, "pipeline")


# --------------------------------------------------------------------------- data quality

def data_quality(run: ReportRun) -> ReportSection | None:
    cleaners = [s for s in run.stages_of("clean") if isinstance(s.get("report"), dict)]
    if not cleaners:
        return None
    data = next(iter(run.stages_of("data")), {})
    splits = (data.get("report") or {}).get("splits") or {}
    body = _funnel(cleaners, splits)
    rows = []
    for s in cleaners:
        rep = s["report"]
        q = rep.get("quarantine")
        for split in ("train", "valid", "test"):
            r = rep.get(split)
            if isinstance(r, dict):
                rows.append([s.get("id"), s.get("name"), split, r.get("rows_in"), r.get("rows_out"),
                             r.get("removed"), r.get("flagged"), link(q, q) if q and r.get("removed") else ""])
    body += "<h3>Rows through the cleaning stages</h3>" + table(
        ["stage", "cleaner", "split", "rows in", "rows out", "quarantined", "flagged", "quarantine file"], rows)
    body += _reasons(run, cleaners)
    body += _detection(cleaners)
    return ReportSection("Data quality", body, "data-quality")


def _funnel(cleaners: list[dict], splits: dict[str, Any]) -> str:
    labels = ["loaded"] + [f"{s.get('id')}\n{s.get('name')}" for s in cleaners]
    fig, ax = plots.figure(7.5, 3.4)
    width = 0.8 / 3
    drawn = False
    for k, split in enumerate(("train", "valid", "test")):
        first = cleaners[0]["report"].get(split)
        if not isinstance(first, dict):
            continue
        counts = [splits.get(split, first.get("rows_in"))] + [
            (s["report"].get(split) or {}).get("rows_out") for s in cleaners]
        xs = [i + (k - 1) * width for i in range(len(counts))]
        ax.bar(xs, [c if _num(c) else 0 for c in counts], width, label=split, color=SPLIT_COLOURS[split])
        drawn = True
    if not drawn:
        return ""
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("rows")
    ax.set_title("Rows kept after each cleaning stage")
    ax.legend(fontsize=8)
    return f'<div class="plots">{plots.img(fig, "rows funnel through cleaning")}</div>'


def _reasons(run: ReportRun, cleaners: list[dict]) -> str:
    """Why rows left: the quarantine files' reasons, counted per split."""
    import pandas as pd

    from ..runfolder import inside

    rows = []
    for s in cleaners:
        q = s["report"].get("quarantine")
        if not q:
            continue
        try:
            frame = pd.read_csv(inside(run.dir, q), usecols=lambda c: c in ("reason", "split"))
        except Exception as e:  # noqa: BLE001 - a missing/odd file is shown, not fatal
            rows.append([s.get("id"), s.get("name"), f"(cannot read {q}: {type(e).__name__})", "", link(q, q)])
            continue
        if "reason" not in frame:
            continue
        # per-row details (ids, scores) would make every reason unique: count the pattern
        frame["reason"] = frame["reason"].astype(str).str.replace(_NUMBER, "N", regex=True)
        by = ["reason", "split"] if "split" in frame else ["reason"]
        counts = frame.groupby(by, dropna=False).size().unstack(fill_value=0) if len(by) == 2 \
            else frame.groupby("reason").size().to_frame("all")
        counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index[:10]]
        for reason, r in counts.iterrows():
            rows.append([s.get("id"), s.get("name"), reason,
                         ", ".join(f"{split} {int(n)}" for split, n in r.items() if n), link(q, q)])
    if not rows:
        return ""
    return "<h3>Why rows were quarantined</h3>" + table(["stage", "cleaner", "reason", "rows", "file"], rows)


def _detection(cleaners: list[dict]) -> str:
    rows = []
    for s in cleaners:
        for split in ("train", "valid", "test"):
            r = s["report"].get(split) or {}
            d = r.get("detection")
            if isinstance(d, dict) or "label_noise_before" in r:
                d = d if isinstance(d, dict) else {}
                rows.append([s.get("id"), s.get("name"), split, d.get("fault", ""), d.get("true"), d.get("flagged"),
                             d.get("hit"), d.get("precision"), d.get("recall"), r.get("label_noise_before"),
                             r.get("label_noise_after")])
    if not rows:
        return ""
    return ("<h3>Detection against the ground truth</h3>" + table(
        ["stage", "cleaner", "split", "fault", "true faults", "flagged", "hits", "precision", "recall",
         "label noise before", "label noise after"], rows))


# --------------------------------------------------------------------------- augmentation

def augmentation(run: ReportRun) -> ReportSection | None:
    stages = run.stages_of("augment")
    samples = list(run.artifact_json("samples.json"))
    if not stages and not samples:
        return None
    body = ""
    if stages:
        body += table(["stage", "augmenter", "status", "rows added", "training rows after", "per batch"],
                      [[s.get("id"), s.get("name"), badge(s.get("status")), (s.get("report") or {}).get("rows_added"),
                        (s.get("report") or {}).get("rows_train"), (s.get("report") or {}).get("per_batch")]
                       for s in stages])
    for stage, data in samples:
        items = data.get("samples") if isinstance(data, dict) else data
        if not isinstance(items, list):
            continue
        cards = "".join(_sample(run, stage, x) for x in items[:MAX_SAMPLES] if isinstance(x, dict))
        body += f"<h3>Samples from {esc(stage)}</h3><div class=\"samples\">{cards}</div>"
    return ReportSection("Augmentation", body, "augmentation")


def _sample(run: ReportRun, stage: str, x: dict[str, Any]) -> str:
    kind = x.get("kind")
    caption = " · ".join(f"{k} {fmt(x[k])}" for k in ("row_id", "source_row_id", "label", "caption") if k in x)
    if kind == "text":
        inner = (f"<div><strong>before</strong> {esc(x.get('before'))}</div>"
                 f"<div><strong>after</strong> {esc(x.get('after'))}</div>")
    elif kind == "image":
        inner = f"{_image(run, stage, x.get('before'), 'before')} → {_image(run, stage, x.get('after'), 'after')}"
    elif kind == "series":
        inner = _series(x.get("before"), x.get("after"))
    else:
        inner = note(f"unknown sample kind {kind!r} (use image, text or series)")
    return f'<div class="sample">{inner}<div class="note">{esc(caption)}</div></div>'


def _image(run: ReportRun, stage: str, value: Any, alt: str) -> str:
    """A sample image: a PNG file beside samples.json, or pixel values (H x W [x C]) as nested lists."""
    import numpy as np

    from ..runfolder import inside

    try:
        if isinstance(value, str):
            return plots.png_file_img(inside(run.dir / "artifacts" / stage, value).read_bytes(), alt)
        a = np.asarray(value, dtype=float)
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):  # channels first
            a = np.moveaxis(a, 0, -1)
        a = a.squeeze()
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        fig, ax = plots.figure(1.4, 1.4)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, interpolation="nearest")
        ax.axis("off")
        return plots.img(fig, alt)
    except Exception as e:  # noqa: BLE001 - one bad sample does not hide the others
        return note(f"({alt}: cannot show: {type(e).__name__}: {e})")


def _series(before: Any, after: Any) -> str:
    import numpy as np

    fig, ax = plots.figure(4.2, 1.8)
    for values, label, colour in ((before, "before", "#656d76"), (after, "after", "#0969da")):
        try:
            a = np.atleast_2d(np.asarray(values, dtype=float))
        except (TypeError, ValueError):
            continue
        if a.shape[0] > a.shape[1]:  # (time, channels) -> (channels, time)
            a = a.T
        for i, ch in enumerate(a[:4]):
            ax.plot(ch, color=colour, lw=1, alpha=0.9 if label == "after" else 0.6, label=label if i == 0 else None)
    ax.legend(fontsize=7)
    return plots.img(fig, "series before and after")


# --------------------------------------------------------------------------- features

def features(run: ReportRun) -> ReportSection | None:
    stages = run.stages_of("features")
    importances = list(run.artifact_json("importance.json"))
    for stage, ranking in run.artifact_json("shap-ranking.json"):  # shap-select's ranking records
        if isinstance(ranking, list) and all(isinstance(r, dict) for r in ranking):
            importances.append((stage, {"method": "SHAP", "features": [r.get("feature") for r in ranking],
                                        "importance": [r.get("importance") for r in ranking]}))
    pictures = list(run.artifacts("shap-summary.png"))
    embeddings = list(run.artifact_json("embedding.json"))
    if not (stages or importances or embeddings or pictures):
        return None
    body = ""
    if stages:
        def probe(report: dict, when: str) -> Any:
            value = (report.get("probe") or {}).get(when) if isinstance(report.get("probe"), dict) else None
            return f"{value:.4f}" if _num(value) else "—"

        metric = next((str((s.get("report") or {}).get("probe", {}).get("metric", "")) for s in stages
                       if isinstance((s.get("report") or {}).get("probe"), dict)), "score")
        body += table(["stage", "transform", "status", "features in", "features out",
                       f"validation {metric} before", f"validation {metric} after"],
                      [[s.get("id"), s.get("name"), badge(s.get("status")), (s.get("report") or {}).get("features_in"),
                        (s.get("report") or {}).get("features_out"), probe(s.get("report") or {}, "before"),
                        probe(s.get("report") or {}, "after")] for s in stages])
        body += ("<p>Validation score of a quick linear probe (logistic regression or ridge on the numeric "
                 "features, fitted on the training split) before and after each transform.</p>")
    figs = []
    counted = [s for s in stages if _num((s.get("report") or {}).get("features_out"))]
    if counted:
        fig, ax = plots.figure(5.5, 3.0)
        labels = ["input"] + [f"{s.get('id')}\n{s.get('name')}" for s in counted]
        values = [counted[0]["report"].get("features_in", 0)] + [s["report"]["features_out"] for s in counted]
        ax.bar(labels, values, color="#0969da")
        ax.set_ylabel("features")
        ax.set_title("Feature count after each transform")
        ax.tick_params(axis="x", labelsize=8)
        figs.append(plots.img(fig, "feature counts"))
    for stage, d in importances:
        if isinstance(d, dict) and isinstance(d.get("features"), list) and isinstance(d.get("importance"), list):
            figs.append(_importance(stage, d))
    for stage, d in embeddings:
        if isinstance(d, dict) and isinstance(d.get("x"), list) and isinstance(d.get("y"), list):
            figs.append(_embedding(stage, d))
    figs += [plots.png_file_img(path.read_bytes(), f"SHAP summary {stage}") for stage, path in pictures]
    if figs:
        body += f'<div class="plots">{"".join(figs)}</div>'
    return ReportSection("Features", body, "features")


def _importance(stage: str, d: dict[str, Any]) -> str:
    pairs = sorted(((str(f), float(v)) for f, v in zip(d["features"], d["importance"]) if _num(v)),
                   key=lambda p: p[1], reverse=True)[:20]
    fig, ax = plots.figure(5.5, 0.25 * len(pairs) + 1.2)
    ax.barh([p[0] for p in pairs][::-1], [p[1] for p in pairs][::-1], color="#8250df")
    ax.set_xlabel(str(d.get("label", "mean |SHAP value|")))
    ax.set_title(f"{d.get('method', 'SHAP')} importance ({stage})")
    ax.tick_params(axis="y", labelsize=8)
    return plots.img(fig, f"feature importance {stage}")


def _embedding(stage: str, d: dict[str, Any]) -> str:
    import numpy as np

    x, y = np.asarray(d["x"], dtype=float), np.asarray(d["y"], dtype=float)
    labels = np.asarray([str(v) for v in d.get("label", [""] * len(x))])
    n = min(len(x), len(y), len(labels))
    keep = np.random.default_rng(0).permutation(n)[:5000] if n > 5000 else np.arange(n)  # plotting speed
    fig, ax = plots.figure(5.0, 4.2)
    classes = sorted(set(labels[keep].tolist()))
    for c in classes[:20]:
        sel = keep[labels[keep] == c]
        ax.scatter(x[sel], y[sel], s=6, alpha=0.7, label=c)
    if 1 < len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, title="label", title_fontsize=7)
    ax.set_title(f"{d.get('method', 'UMAP')} embedding ({stage})")
    return plots.img(fig, f"embedding {stage}")


# --------------------------------------------------------------------------- training

def training(run: ReportRun) -> ReportSection | None:
    train = next(iter(run.stages_of("train")), None)
    steps, epochs = run.events("step"), run.events("epoch")
    if train is None and not steps and not epochs:
        return None
    body = ""
    rep = (train or {}).get("report") or {}
    keys = ("device", "precision", "parallel", "epochs", "steps", "skipped_steps", "steps_per_epoch",
            "effective_batch", "parameters", "train_time_s", "resumed_from")
    pairs = [("status", badge((train or {}).get("status", "not reached")))] + [(k, rep[k]) for k in keys if k in rep]
    body += kv(pairs)
    figs = [f for f in (_loss_plot(steps, epochs), _epoch_metrics_plot(epochs),
                        _step_plot(steps, [("lr", "learning rate")], "Learning rate", log=False),
                        _scale_plot(steps),
                        _step_plot(steps, [("samples_per_s", "samples / s")], "Throughput", log=False),
                        _step_plot(steps, [("grad_norm", "gradient norm")], "Gradient norm", log=False),
                        _system_plot(run.events("system"))) if f]
    if figs:
        body += f'<div class="plots">{"".join(figs)}</div>'
    if epochs:
        cols = [k for k in epochs[-1] if k not in ("event", "time") and any(_num(e.get(k)) for e in epochs)]
        body += "<h3>Per epoch</h3>" + table(cols, [[e.get(k) for k in cols] for e in epochs])
    latency = run.events("latency")
    if latency:
        body += "<h3>Inference</h3>" + kv((k, v) for k, v in latency[-1].items() if k not in ("event", "time"))
    return ReportSection("Training", body, "training")


def _series_of(records: list[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    pts = [(r[x], r[key]) for r in records if _num(r.get(x)) and _num(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _loss_plot(steps: list[dict], epochs: list[dict]) -> str | None:
    xs, ys = _series_of(steps, "loss")
    curves = [(xs, ys, "train loss (steps)", "-", 1.0)]
    for key, label in (("train_loss", "train loss (epoch)"), ("val_loss", "validation loss")):
        ex, ey = _series_of(epochs, key)
        curves.append((ex, ey, label, "o-", 1.5))
    if not any(c[0] for c in curves):
        return None
    fig, ax = plots.figure()
    for x, y, label, style, lw in curves:
        if x:
            x, y = plots.downsample(x, y)
            ax.plot(x, y, style, lw=lw, ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_title("Loss")
    ax.legend(fontsize=8)
    return plots.img(fig, "loss curves")


def _epoch_metrics_plot(epochs: list[dict]) -> str | None:
    keys = sorted({k for e in epochs for k, v in e.items() if k.startswith("val_") and k != "val_loss" and _num(v)})
    if not keys:
        return None
    fig, ax = plots.figure()
    for k in keys:
        x, y = _series_of(epochs, k, x="epoch")
        ax.plot(x, y, "o-", ms=3, label=k)
    ax.set_xlabel("epoch")
    ax.set_title("Validation metrics")
    ax.legend(fontsize=8)
    return plots.img(fig, "validation metrics per epoch")


def _step_plot(steps: list[dict], keys: list[tuple[str, str]], title: str, log: bool) -> str | None:
    curves = [(label, *_series_of(steps, key)) for key, label in keys]
    curves = [c for c in curves if c[1]]
    if not curves:
        return None
    fig, ax = plots.figure()
    for label, x, y in curves:
        x, y = plots.downsample(x, y)
        ax.plot(x, y, lw=1, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return plots.img(fig, title)


def _scale_plot(steps: list[dict]) -> str | None:
    xs, scale = _series_of(steps, "loss_scale")
    if not xs:
        return None
    fig, ax = plots.figure()
    x, y = plots.downsample(xs, scale)
    ax.plot(x, y, lw=1, label="loss scale", color="#0969da")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss scale")
    sx, skipped = _series_of(steps, "skipped_steps")
    if sx:
        ax2 = ax.twinx()
        x, y = plots.downsample(sx, skipped)
        ax2.plot(x, y, lw=1, color="#cf222e", label="skipped steps (total)")
        ax2.set_ylabel("skipped steps")
    ax.set_title("Loss scale and skipped steps")
    return plots.img(fig, "loss scale and skipped steps")


def _system_plot(samples: list[dict]) -> str | None:
    if not samples:
        return None
    t0 = samples[0].get("time") if _num(samples[0].get("time")) else 0.0
    samples = [{**s, "t": s["time"] - t0} for s in samples if _num(s.get("time"))]
    util = [k for k in ("cpu_percent", "process_cpu_percent", "memory_percent") if any(k in s for s in samples)]
    util += sorted({k for s in samples for k in s if k.startswith("gpu") and k.endswith("_util_pct")})
    mem = sorted({k for s in samples for k in s if k.startswith("gpu") and k.endswith("_mem_used_mb")})
    mem += [k for k in ("process_rss_mb",) if any(k in s for s in samples)]
    fig, axes = plots.figure(4.6, 3.0, ncols=2)
    for ax, keys, title in ((axes[0], util, "Utilisation (%)"), (axes[1], mem, "Memory (MB)")):
        for k in keys:
            x, y = _series_of(samples, k, x="t")
            x, y = plots.downsample(x, y)
            ax.plot(x, y, lw=1, label=k)
        ax.set_xlabel("seconds")
        ax.set_title(title)
        if keys:
            ax.legend(fontsize=7)
    return plots.img(fig, "system utilisation and memory")


# --------------------------------------------------------------------------- tuning / compression

def tuning(run: ReportRun) -> ReportSection | None:
    found = [(s, d) for s, d in run.artifact_json("trials.json") if isinstance(d, dict)
             and isinstance(d.get("trials"), list)]
    for s in run.stages_of("tune"):  # the tune stage's own report: {"metric", "maximize", "table"}
        rep = s.get("report") or {}
        if isinstance(rep.get("table"), list) and rep.get("metric"):
            metric = rep["metric"]
            trials = [{"number": t.get("trial", i), "state": t.get("status", ""), "score": t.get(metric),
                       "params": {k: v for k, v in t.items() if k not in ("trial", "status", metric)}}
                      for i, t in enumerate(rep["table"]) if isinstance(t, dict)]
            found.append((s.get("id", "tune"), {"metric": metric, "maximize": rep.get("maximize", True),
                                                "trials": trials}))
    if not found:
        return None
    body = ""
    for stage, d in found:
        trials = [t for t in d["trials"] if isinstance(t, dict)]
        metric, maximize = d.get("metric", "score"), bool(d.get("maximize", True))
        names = sorted({k for t in trials for k in (t.get("params") or {})})
        body += f"<h3>{esc(stage)}: {len(trials)} trials, {'maximising' if maximize else 'minimising'} " \
                f"{esc(metric)}</h3>"
        scored = [(t.get("number", i), t["score"]) for i, t in enumerate(trials) if _num(t.get("score"))]
        if scored:
            best = max if maximize else min
            fig, ax = plots.figure()
            ax.plot([s[0] for s in scored], [s[1] for s in scored], "o", ms=4, alpha=0.7, label="trial")
            running, acc = [], None
            for _, v in scored:
                acc = v if acc is None else best(acc, v)
                running.append(acc)
            ax.step([s[0] for s in scored], running, where="post", color="#cf222e", label="best so far")
            ax.set_xlabel("trial")
            ax.set_ylabel(str(metric))
            ax.set_title("Convergence")
            ax.legend(fontsize=8)
            body += f'<div class="plots">{plots.img(fig, "tuning convergence")}</div>'
        body += table(["trial", "state", str(metric), *names, "seconds"],
                      [[t.get("number", i), t.get("state", ""), t.get("score"),
                        *((t.get("params") or {}).get(n) for n in names), t.get("seconds")]
                       for i, t in enumerate(trials)])
    return ReportSection("Tuning", body, "tuning")


def compression(run: ReportRun) -> ReportSection | None:
    found = [(s, d) for s, d in run.artifact_json("compression.json") if isinstance(d, dict)
             and isinstance(d.get("rows"), list)]
    found += [(s.get("id", "compress"), {"rows": s["report"]["table"]}) for s in run.stages_of("compress")
              if isinstance((s.get("report") or {}).get("table"), list)]  # the compress stage's own table
    if not found:
        return None
    body = ""
    for stage, d in found:
        rows = [r for r in d["rows"] if isinstance(r, dict)]
        cols = list(dict.fromkeys(k for r in rows for k in r))
        body += f"<h3>{esc(stage)}</h3>" + table(cols, [[r.get(c) for c in cols] for r in rows])
        numeric = [c for c in cols if c not in ("name", "version") and all(_num(r.get(c)) for r in rows)][:4]
        if numeric and rows:
            fig, axes = plots.figure(3.2, 2.8, ncols=len(numeric))
            axes = axes if len(numeric) > 1 else [axes]
            names = [str(r.get("name", r.get("version", i))) for i, r in enumerate(rows)]
            for ax, c in zip(axes, numeric):
                ax.bar(names, [r[c] for r in rows], color="#0969da")
                ax.set_title(c)
                ax.tick_params(axis="x", labelsize=8, rotation=30)
            body += f'<div class="plots">{plots.img(fig, "compression comparison")}</div>'
    return ReportSection("Compression", body, "compression")


BUILTIN: list[Callable[[ReportRun], ReportSection | None]] = [
    overview, error, pipeline, data_quality, augmentation, features, training, tuning, compression]
