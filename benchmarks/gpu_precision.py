"""Precision policies on a GPU: forgeline's ``fit`` against plain PyTorch autocast + GradScaler.

Two models, written here with ``torch.nn`` (torchvision is not available): ResNet-152
(bottleneck blocks [3, 8, 36, 3]) at batch 64 on 224x224 images, and a 12-layer d=1024
GPT-style transformer (``scaled_dot_product_attention``, causal, sequence 1024, batch 8,
classifying each sequence from its last token). For each policy fp32 / tf32 / bf16 / fp16
both variants run in the same process on the same data and batch order: forgeline's real
``fit`` (the policy object, the ``single`` strategy, the loop's own step path) and the loop a
PyTorch user writes (``torch.autocast`` + ``torch.amp.GradScaler``); both use fused AdamW
and keep the data on the GPU. Then the fast path: ``torch.compile`` + fused AdamW + flash
attention (bf16) on the GPT-style model, forgeline (``train.compile: true``) against plain
PyTorch with the same.

Step time is the median over 5-step intervals after warm-up (forgeline: the loop's own
``step_time_s`` records, which span synchronised logging steps; plain: the same intervals
timed around ``torch.cuda.synchronize``). TFLOP/s are counted analytically: ResNet from
the conv/linear shapes (forward multiply-adds x 2 x 3 for forward+backward), GPT as
6 x parameters x tokens + 12 x layers x batch x seq^2 x d for attention (forward+backward).
Peak memory is ``torch.cuda.max_memory_allocated`` (data included, the same in both).

    python benchmarks/gpu_precision.py            # on a CUDA GPU, < 8 minutes on one H200
    python benchmarks/gpu_precision.py --smoke    # tiny sizes, CPU parts only (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from forgeline.core import DataSpec, DistInfo, Model, ParallelStrategy, Params, RunInfo, Table
from forgeline.core.pipeline import Train
from forgeline.core.train import TrainJob
from forgeline.core.train.loop import fit
from forgeline.plugins.precision import BF16, FP16, FP32, TF32
from forgeline.plugins.precision.policies import _set_tf32_switches, _tf32_switches
from pydantic import Field

try:  # the real built-in `single` strategy when the parallel family is installed
    from forgeline.plugins.parallel import Single as SingleStrategy  # type: ignore[attr-defined]
except Exception:  # the base class is the single-process strategy
    SingleStrategy = ParallelStrategy

POLICIES = {"fp32": FP32, "tf32": TF32, "bf16": BF16, "fp16": FP16}
LOG_EVERY = 5


# ----------------------------------------------------------------------------- models

class Bottleneck(torch.nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = torch.nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2 = torch.nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(width)
        self.conv3 = torch.nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class ResNet(torch.nn.Module):
    """ResNet with bottleneck blocks; [3, 8, 36, 3] and width 64 is ResNet-152."""

    def __init__(self, blocks=(3, 8, 36, 3), width: int = 64, classes: int = 1000):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, width, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(width),
                                        torch.nn.ReLU(inplace=True), torch.nn.MaxPool2d(3, 2, 1))
        layers, cin = [], width
        for i, n in enumerate(blocks):
            w = width * 2 ** i
            for j in range(n):
                layers.append(Bottleneck(cin, w, stride=2 if (j == 0 and i > 0) else 1))
                cin = w * Bottleneck.expansion
        self.layers = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class Block(torch.nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc, self.out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(torch.nn.Module):
    """GPT-style decoder (pre-LN, causal SDPA) that classifies a sequence from its last token."""

    def __init__(self, vocab: int, seq: int, d: int, layers: int, heads: int, classes: int, flash: bool = False):
        super().__init__()
        self.flash = flash
        self.tok, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(seq, d)
        self.blocks = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = torch.nn.LayerNorm(d), torch.nn.Linear(d, classes)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        ctx = contextlib.nullcontext()
        if self.flash:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            ctx = sdpa_kernel(SDPBackend.FLASH_ATTENTION)
        with ctx:
            for block in self.blocks:
                x = block(x)
        return self.head(self.ln(x[:, -1]))


class ImageModel(Model):
    """ResNet over the table's ``image`` array (benchmark model)."""

    name = "bench-resnet"

    class Params(Params):
        blocks: tuple[int, ...] = Field((3, 8, 36, 3), description="bottleneck blocks per stage")
        width: int = Field(64, description="stem width")

    def inputs(self, table: Table) -> torch.Tensor:
        return torch.from_numpy(table.arrays["image"])

    def build(self, spec: DataSpec) -> torch.nn.Module:
        return ResNet(self.params.blocks, self.params.width, spec.n_outputs)


class TokenModel(Model):
    """GPT-style classifier over the table's ``tokens`` array (benchmark model)."""

    name = "bench-gpt"

    class Params(Params):
        vocab: int = Field(50304, description="vocabulary size")
        d: int = Field(1024, description="model width")
        layers: int = Field(12, description="transformer blocks")
        heads: int = Field(16, description="attention heads")
        flash: bool = Field(False, description="force the flash-attention SDPA kernel")

    def inputs(self, table: Table) -> torch.Tensor:
        return torch.from_numpy(table.arrays["tokens"])

    def build(self, spec: DataSpec) -> torch.nn.Module:
        p = self.params
        return GPT(p.vocab, spec.input_shape[0], p.d, p.layers, p.heads, spec.n_outputs, p.flash)


# ----------------------------------------------------------------------------- FLOPs

def resnet_train_flops(model: torch.nn.Module, sample: torch.Tensor) -> float:
    """Training FLOPs per sample: 3 x 2 x multiply-adds of every conv and linear layer."""
    macs = []

    def count(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs.append(out.numel() * k)
        else:
            macs.append(out.numel() * mod.in_features)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    model.eval()  # batch statistics of one sample would fail; the FLOPs are the same
    with torch.no_grad():
        model(sample[:1])
    for h in handles:
        h.remove()
    return 6.0 * sum(macs)


def gpt_train_flops(model: GPT, seq: int) -> float:
    """Training FLOPs per sequence: 6 x params (embeddings excluded) x tokens + causal-free attention."""
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tok.", "pos.")))
    d, layers = model.head.in_features, len(model.blocks)
    return 6.0 * params * seq + 12.0 * layers * seq * seq * d


# ----------------------------------------------------------------------------- runs

def forgeline_run(case: dict, policy: str, compile_: bool, steps: int, batch: int, device: str) -> dict:
    records: list[dict] = []
    config = Train.model_validate({"model": case["name"], "device": device, "epochs": 1, "batch_size": batch,
                                   "log_every": LOG_EVERY, "compile": compile_,
                                   "optimizer": {"name": "adamw", "lr": 1e-4}})
    job = TrainJob(config=config, model=case["model"], precision=POLICIES[policy](), parallel=SingleStrategy(),
                   train=case["table"], valid=None, task="classification", classes=case["classes"],
                   run=RunInfo(name="bench", dir=None, seed=0, pipeline={}), dist=DistInfo(), seed=0,
                   log=records.append)
    _reset_memory(device)
    fit(job)
    times = [r["step_time_s"] for r in records if r["event"] == "step"][1:]  # first interval: warm-up
    return {"step_s": statistics.median(times), "peak_gib": _peak_gib(device)}


def plain_run(case: dict, policy: str, compile_: bool, steps: int, batch: int, device: str) -> dict:
    """The loop a PyTorch user writes: autocast + GradScaler, fused AdamW, same batches."""
    dev = torch.device(device)
    torch.manual_seed(0)
    comp = case["model"]
    x_all = comp.inputs(case["table"]).to(dev)
    y_all = torch.from_numpy(case["table"].y.to_numpy(np.int64, copy=True)).to(dev)
    model = comp.build(DataSpec("classification", len(case["classes"]), tuple(x_all.shape[1:]))).to(dev)
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda" or None)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(policy)
    scaler = torch.amp.GradScaler(dev.type, init_scale=2.0 ** 15, growth_interval=2000, enabled=policy == "fp16")
    saved = _tf32_switches()
    if policy == "tf32":
        _set_tf32_switches("tf32", "tf32")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x_all))).to(dev)  # the shard order of epoch 0
    _reset_memory(device)
    times = []
    try:
        sync()
        t0 = time.perf_counter()
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if (step + 1) % LOG_EVERY == 0:
                sync()
                now = time.perf_counter()
                times.append((now - t0) / LOG_EVERY)
                t0 = now
    finally:
        _set_tf32_switches(**saved)
    return {"step_s": statistics.median(times[1:]), "peak_gib": _peak_gib(device)}


def _reset_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")


# ----------------------------------------------------------------------------- cases

def make_cases(smoke: bool, steps: int) -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    if smoke:
        rb, img, blocks, width = 4, 32, (1, 1, 1, 1), 8
        gb, seq, gpt = 2, 32, {"vocab": 256, "d": 64, "layers": 2, "heads": 4}
    else:
        rb, img, blocks, width = 64, 224, (3, 8, 36, 3), 64
        gb, seq, gpt = 8, 1024, {}
    n_img, n_seq = rb * steps, gb * steps
    images = torch.randn(n_img, 3, img, img, generator=g).numpy()
    labels = torch.randint(0, 1000, (n_img,), generator=g).numpy()
    image_table = Table.from_frame(pd.DataFrame({"y": labels}), target="y", arrays={"image": images})
    vocab = gpt.get("vocab", 50304)
    tokens = torch.randint(0, vocab, (n_seq, seq), generator=g).numpy()
    token_table = Table.from_frame(pd.DataFrame({"y": torch.randint(0, 2, (n_seq,), generator=g).numpy()}),
                                   target="y", arrays={"tokens": tokens})
    return {
        "resnet152": {"name": "bench-resnet", "table": image_table, "batch": rb, "classes": list(range(1000)),
                      "model": ImageModel(blocks=blocks, width=width)},
        "gpt-12x1024": {"name": "bench-gpt", "table": token_table, "batch": gb, "classes": [0, 1],
                        "model": TokenModel(**gpt), "seq": seq},
    }


def flops_per_sample(case: dict, key: str) -> float:
    comp = case["model"]
    sample = comp.inputs(case["table"])[:1]
    model = comp.build(DataSpec("classification", len(case["classes"]), tuple(sample.shape[1:])))
    return resnet_train_flops(model, sample) if key == "resnet152" else gpt_train_flops(model, case["seq"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing")
    ap.add_argument("--steps", type=int, default=25, help="steps per run (the first 5 are warm-up)")
    ap.add_argument("--budget-s", type=float, default=450, help="skip remaining runs after this many seconds")
    ap.add_argument("--no-fast-path", action="store_true")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_precision: no CUDA GPU here; nothing to measure (run with --smoke to check the script on CPU)")
        return 0
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        torch.set_num_threads(1)
    steps = max(2 * LOG_EVERY, (2 * LOG_EVERY if args.smoke else args.steps) // LOG_EVERY * LOG_EVERY)
    start = time.perf_counter()
    cases = make_cases(args.smoke, steps)
    name = "CPU (smoke sizes)" if args.smoke else torch.cuda.get_device_name()
    print(f"torch {torch.__version__} on {name}; {steps} steps per run, median of {LOG_EVERY}-step intervals after warm-up")
    rows = []

    def measure(key: str, policy: str, compile_: bool, label: str) -> None:
        case = cases[key]
        if time.perf_counter() - start > args.budget_s:
            print(f"  {key:12} {label:10} skipped: time budget of {args.budget_s:.0f}s spent")
            return
        why = POLICIES[policy]().unsupported(torch.device(device))
        if why:
            print(f"  {key:12} {label:10} skipped: {why}")
            return
        out = {}
        for variant, runner in (("plain", plain_run), ("forgeline", forgeline_run)):
            try:
                out[variant] = runner(case, policy, compile_, steps, case["batch"], device)
            except Exception as error:  # one failing configuration must not end the whole run
                print(f"  {key:12} {label:10} {variant} failed: {type(error).__name__}: {error}")
                if device == "cuda":
                    torch.cuda.empty_cache()
                return
        flops = case["flops"] * case["batch"]
        row = {"model": key, "config": label, "batch": case["batch"]}
        for v in ("plain", "forgeline"):
            row[f"{v}_samples_s"] = case["batch"] / out[v]["step_s"]
            row[f"{v}_tflops"] = flops / out[v]["step_s"] / 1e12
            row[f"{v}_peak_gib"] = out[v]["peak_gib"]
        row["forgeline_vs_plain"] = row["forgeline_samples_s"] / row["plain_samples_s"]
        rows.append(row)
        print(f"  {key:12} {label:10} plain {row['plain_samples_s']:9.1f} samples/s {row['plain_tflops']:7.1f} TFLOP/s "
              f"{row['plain_peak_gib']:6.2f} GiB | forgeline {row['forgeline_samples_s']:9.1f} samples/s "
              f"{row['forgeline_tflops']:7.1f} TFLOP/s {row['forgeline_peak_gib']:6.2f} GiB | "
              f"forgeline/plain {row['forgeline_vs_plain']:.3f}", flush=True)

    for key, case in cases.items():
        case["flops"] = flops_per_sample(case, key)
        print(f"{key}: {case['flops'] / 1e9:.4g} GFLOP per sample (training)")
        for policy in POLICIES:
            measure(key, policy, False, policy)
    if not args.no_fast_path:
        if args.smoke:
            print("  fast path (torch.compile + fused AdamW + flash SDPA) needs CUDA: skipped in --smoke")
        else:
            gpt = cases["gpt-12x1024"]
            gpt["model"] = TokenModel(flash=True)
            done = len(rows)
            measure("gpt-12x1024", "bf16", True, "fast-bf16")
            if len(rows) == done:  # forcing the flash kernel failed: let SDPA pick (flash on sm80+ in bf16)
                gpt["model"] = TokenModel(flash=False)
                measure("gpt-12x1024", "bf16", True, "fast-auto")

    by = {(r["model"], r["config"]): r for r in rows}
    for key in cases:
        if (key, "fp32") in by and (key, "fp16") in by:
            a, b = by[(key, "fp32")], by[(key, "fp16")]
            for v in ("plain", "forgeline"):
                mem = b[f"{v}_peak_gib"] / a[f"{v}_peak_gib"] if a[f"{v}_peak_gib"] == a[f"{v}_peak_gib"] else math.nan
                print(f"{key} {v:9}: fp16 throughput {b[f'{v}_samples_s'] / a[f'{v}_samples_s']:.2f}x fp32, "
                      f"memory {mem:.0%} of fp32")
    print(f"total {time.perf_counter() - start:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
