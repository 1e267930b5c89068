"""The compress stage: compressors in order, each on the previous one's output, then a table.

- :func:`compress_model` — the driver: runs the compressors on a model through a
  :class:`~forgeline.core.components.CompressContext`, measures every version (parameters,
  CPU latency, validation score) and exports the final model; returns a
  :class:`CompressResult` whose ``table`` holds one row per version.
- :func:`compress_run` — the compress stage's work (``forgeline.core.stages.compress``):
  fine-tuning (``ctx.fit``) is the run's own training loop (optimizer, parallel strategy,
  logging) on the given module, evaluation is the loop's validation.

Speeds are measured, never counted: each version's median latency over the same batch on the
CPU (where INT8 kernels run), relative to the original model.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .components import CompressContext, DataSpec, Kind, Model

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .components import Compressor
    from .stages import RunState, StageEnv


def latency_ms(model: Any, inputs: torch.Tensor, warmup: int = 3, repeats: int = 15) -> float:
    """Fastest wall time (ms) of one forward pass over ``inputs`` on the CPU, in inference mode.

    The minimum, not the median: on a shared CPU other processes only ever add time, so the
    fastest repeat is the one closest to the model's own cost (as ``timeit`` advises)."""
    import torch

    times = []
    if hasattr(model, "eval"):
        model.eval()
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(inputs)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.min(times) * 1e3)


def count_params(model: Any) -> int:
    import torch

    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():  # quantised conv/linear keep their weights packed, not as parameters
        w = getattr(m, "weight", None)
        if callable(w) and not list(m.parameters(recurse=False)):
            weight = w()
            total += weight.numel() if isinstance(weight, torch.Tensor) else 0
            b = m.bias() if callable(getattr(m, "bias", None)) else None
            total += b.numel() if isinstance(b, torch.Tensor) else 0
    return total


def export(model: Any, example: torch.Tensor, path: Path | None) -> Any:
    """TorchScript: traced, then frozen (constants folded, conv-bn fused); saved when ``path`` is set."""
    import torch

    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        scripted = torch.jit.freeze(torch.jit.trace(model, example))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scripted.save(str(path))
    return scripted


@dataclass
class CompressResult:
    model: Any  # the last compressor's output (eager)
    exported: Any  # its TorchScript form
    table: list[dict[str, Any]]
    reports: dict[str, Any] = field(default_factory=dict)


def compress_model(model: Any, compressors: list[tuple[str, Compressor]], ctx: CompressContext, *,
                   latency_inputs: torch.Tensor, metric: str, export_path: Path | None = None,
                   log: Callable[[Mapping[str, Any]], None] = lambda r: None) -> CompressResult:
    """Run ``compressors`` (``(stage id, compressor)``) in order; measure and export; see the module."""
    import torch

    x = latency_inputs.cpu()
    reference = copy.deepcopy(model).cpu().eval()
    base_ms = latency_ms(reference, x)

    def row(version: str, m: Any, ms: float, score: float | None) -> dict[str, Any]:
        r = {"version": version, "params": count_params(m) if hasattr(m, "parameters") else None,
             "latency_ms": round(ms, 3), "speed": round(base_ms / ms, 3), metric: score}
        log({"event": "compress", **r})
        return r

    table = [row("original", reference, base_ms, ctx.evaluate(reference).get(metric))]
    reports = {}
    current = model
    for stage_id, comp in compressors:
        with torch.enable_grad():
            current = comp.compress(current, ctx)
        reports[stage_id] = comp.report()
        cpu = current.cpu() if hasattr(current, "cpu") else current
        table.append(row(comp.name, cpu, latency_ms(cpu, x), ctx.evaluate(cpu).get(metric)))
        current = cpu
    exported = export(current, x, export_path)
    table.append(row("exported", current, latency_ms(exported, x), ctx.evaluate(exported).get(metric)))
    table[-1]["params"] = table[-2]["params"]
    return CompressResult(current, exported, table, reports)


def format_table(table: list[dict[str, Any]], metric: str) -> str:
    """The table as Markdown: version, params, speed, score."""
    def fmt_params(n: int | None) -> str:
        if n is None:
            return "?"
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)

    def fmt_score(v: float | None) -> str:
        return "?" if v is None else f"{100 * v:.1f}%" if "accuracy" in metric or "auc" in metric else f"{v:.4g}"

    lines = [f"| version | params | speed | latency | {metric.removeprefix('val_')} |", "|---|---|---|---|---|"]
    lines += [f"| {r['version']} | {fmt_params(r['params'])} | {r['speed']:.2f}x | {r['latency_ms']:.1f} ms | "
              f"{fmt_score(r[metric])} |" for r in table]
    return "\n".join(lines)


def compress_run(state: RunState, env: StageEnv) -> tuple[Any, dict[str, Any]]:
    """The compress stage's work: fine-tuning (``ctx.fit``) is the run's own training loop on
    the given module (full precision, the run's parallel strategy), evaluation its validation;
    returns the final (compressed) module and the stage report."""
    import torch

    from .errors import InputError
    from .stages.train import train_job
    from .train.batches import encode_targets
    from .train.loop import evaluate_table, fit

    plan, splits, component = env.plan, state.splits, state.model_component
    fp32 = env.catalog.get(Kind.PRECISION_POLICY, "fp32").cls()  # fine-tunes and scores in full precision
    job = replace(train_job(plan, state, env, component, final=False), precision=fp32)
    x_valid, x_train = component.inputs(job.valid), component.inputs(splits.train)
    if not isinstance(x_valid, torch.Tensor):
        raise InputError(f"compress: model {component.name!r} takes named inputs; the compressors need a "
                         "model with one input tensor")
    y_train = encode_targets(splits.train, state.task, state.classes, "train")
    bs, classification = plan.pipeline.train.batch_size, state.task == "classification"
    shape = tuple(x_train.shape[1:])
    spec = DataSpec(task=state.task, n_outputs=len(state.classes) if classification else 1, input_shape=shape,
                    input_shapes={"x": shape})
    fine_tunes = [0]

    def fine_tune(m: Any, epochs: int, loss: Callable | None = None) -> Any:
        fine_tunes[0] += 1
        tuned = replace(job, config=plan.pipeline.train.model_copy(update={"epochs": epochs}), module=m,
                        loss=(lambda out, batch: loss(out, batch["target"])) if loss else None,
                        parallel=plan.parallel.build(), log=lambda rec: env.record({**rec, "fine_tune": fine_tunes[0]}))
        return fit(tuned).module  # the module, re-wrapped by the run's strategy for the pass, unwrapped

    def batches(n: int) -> Any:
        order = np.random.default_rng(plan.pipeline.seed).permutation(len(x_train))
        for i in range(n):
            idx = order[i * bs:(i + 1) * bs]
            if len(idx):
                yield x_train[idx], y_train[idx]

    metric = "val_accuracy" if classification else "val_r2"
    context = env.context("compress")
    compressors = [(f"compress.{i}", res.build().bind(context)) for i, res in enumerate(plan.compress)]
    ctx = CompressContext(spec=spec, example_inputs=x_valid[:bs].cpu(), fit=fine_tune,
                          evaluate=lambda m: evaluate_table(m, job, job.valid, "val_"),
                          teacher=copy.deepcopy(state.model).eval(), stage=context, batches=batches)
    out = env.folder.sub("model")
    result = compress_model(state.model, compressors, ctx, latency_inputs=x_valid[:bs], metric=metric,
                            export_path=out / "compressed.ts" if out is not None else None, log=env.record)
    text = format_table(result.table, metric)
    if not env.quiet and env.dist.is_main:
        print(text, file=sys.stderr)
    env.folder.write_json("compress/table.json", result.table)
    if env.folder.writes:
        (env.folder.sub("compress") / "table.md").write_text(text + "\n")
    for stage_id, comp in compressors:
        state_ = {k: v for k, v in vars(comp).items() if k.endswith("_") and not k.startswith("_")}
        env.folder.write_json(f"compress/{stage_id}-{comp.name}.json", state_)
    return result.model, {"table": result.table, "compressors": result.reports, "metric": metric,
                          "exported": "model/compressed.ts (torch.jit.load)" if out is not None else None}
