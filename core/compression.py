"""The compress stage: compressors in order, each on the previous one's output, then a table.

- :func:`compress_model` — the driver: runs the compressors on a model through a
  :class:`~forgeline.core.components.CompressContext`, measures every version (parameters,
  CPU latency, validation score) and exports the final model; returns a
  :class:`CompressResult` whose ``table`` holds one row per version.
- :class:`CompressStage` — binds the driver to a runner: fine-tuning (``ctx.fit``) is the
  run's own training loop (optimizer, parallel strategy, logging) on the given module,
  evaluation is the loop's validation.

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

    from .catalog import Entry
    from .components import Compressor


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


class CompressStage:
    """The compress stage bound to a :class:`~forgeline.core.runner.Runner`.

    Uses from the runner: ``plan`` (``compress``, ``model``, ``pipeline``), ``catalog``,
    ``folder``, ``record``, ``quiet``, ``task``, ``classes``, ``_stage`` and
    ``_job(splits, batch_augmenters)``. ``run`` returns the final (compressed) module.
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def run(self, model: Any, component: Model, splits: Any, augmenters: list) -> Any:
        import torch

        from .errors import InputError
        from .train.batches import encode_targets
        from .train.loop import evaluate_table, fit

        r = self.runner
        fp32 = r.catalog.get(Kind.PRECISION_POLICY, "fp32").cls()  # fine-tunes and scores in full precision
        job = replace(r._job(splits, augmenters), model=component, precision=fp32, checkpoint_dir=None,
                      resume_from=None)
        valid = job.valid
        classification = r.task == "classification"
        x_valid, x_train = component.inputs(valid), component.inputs(splits.train)
        if not isinstance(x_valid, torch.Tensor):
            raise InputError(f"compress: model {component.name!r} takes named inputs; the compressors need a "
                             "model with one input tensor")
        y_train = encode_targets(splits.train, r.task, r.classes, "train")
        bs = r.p.train.batch_size
        spec = DataSpec(task=r.task, n_outputs=len(r.classes) if classification else 1,
                        input_shape=tuple(x_train.shape[1:]), input_shapes={"x": tuple(x_train.shape[1:])})
        fine_tunes = [0]

        def fine_tune(m: Any, epochs: int, loss: Callable | None = None) -> Any:
            fine_tunes[0] += 1
            tuned = replace(job, config=r.p.train.model_copy(update={"epochs": epochs}), module=m,
                            loss=(lambda out, batch: loss(out, batch["target"])) if loss else None,
                            parallel=r.plan.parallel.build(),
                            log=lambda rec: r.record({**rec, "fine_tune": fine_tunes[0]}))
            return fit(tuned).module  # the module, re-wrapped by the run's strategy for the pass, unwrapped

        def score(m: Any) -> dict[str, float]:
            return evaluate_table(m, job, valid, "val_")

        def batches(n: int) -> Any:
            order = np.random.default_rng(r.p.seed).permutation(len(x_train))
            for i in range(n):
                idx = order[i * bs:(i + 1) * bs]
                if len(idx):
                    yield x_train[idx], y_train[idx]

        metric = "val_accuracy" if classification else "val_r2"
        compressors = [(f"compress.{i}", res.build()) for i, res in enumerate(r.plan.compress)]
        ctx = CompressContext(spec=spec, example_inputs=x_valid[:bs].cpu(), fit=fine_tune, evaluate=score,
                              teacher=copy.deepcopy(model).eval(), stage=r._ctx("compress"), batches=batches)
        res0 = r.plan.compress[0]
        with r._stage("compress", res0, "+".join(c.name for _, c in compressors)) as report:
            out = r.folder.sub("model")
            result = compress_model(model, compressors, ctx, latency_inputs=x_valid[:bs], metric=metric,
                                    export_path=out / "compressed.ts" if out is not None else None, log=r.record)
            text = format_table(result.table, metric)
            if not r.quiet:
                print(text, file=sys.stderr)
            folder = r.folder.sub("compress")
            if folder is not None:
                folder.mkdir(exist_ok=True)
                (folder / "table.md").write_text(text + "\n")
            r.folder.write_json("compress/table.json", result.table)
            report.update(table=result.table, compressors=result.reports, metric=metric,
                          exported="model/compressed.ts (torch.jit.load)" if out is not None else None)
            for stage_id, comp in compressors:
                state = {k: v for k, v in vars(comp).items() if k.endswith("_") and not k.startswith("_")}
                r.folder.write_json(f"compress/{stage_id}-{comp.name}.json", state)
        return result.model
