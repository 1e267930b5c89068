"""Compression benchmark: forgeline's compress stage against the same methods by hand.

Data: scikit-learn's digits upsampled to 32x32; model: a 7-layer CNN (6 conv-BN-ReLU + a
linear head), trained on the CPU. Then, in one run, on copies of the same trained model:

- forgeline: ``compress_model`` with ``prune`` (50% channels, magnitude, 1 fine-tune epoch),
  ``qat-int8`` (1 QAT epoch), ``distill`` (1 epoch), and the TorchScript export;
- by hand: torch-pruning's ``MetaPruner`` (same ratio and importance) + the same fine-tune,
  then ``prepare_qat_fx``/``convert_fx`` on x86 with the same QAT epoch, scripted the same way.

Latency: the fastest of 15 forward passes over a batch of 64 (see
``forgeline.core.compression.latency_ms``). ``--quick`` trains less.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np


def data():
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = F.interpolate(torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32), size=32, mode="bilinear")
    y = torch.tensor(d.target)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=d.target)
    return x[tr], y[tr], x[te], y[te]


def cnn(width: int = 32):
    from torch import nn

    layers, c = [], 1
    for i, o in enumerate([width, width, 2 * width, 2 * width, 4 * width, 4 * width]):
        layers += [nn.Conv2d(c, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        c = o
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def trainer(x, y, lr: float = 2e-3):
    import torch
    import torch.nn.functional as F

    def fit(model, epochs, loss=None):
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(64):
                out = model(x[idx])
                (loss or F.cross_entropy)(out, y[idx]).backward()
                opt.step()
                opt.zero_grad()
        return model
    return fit


def accuracy(model, x, y) -> float:
    import torch

    if hasattr(model, "eval"):
        model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch
    import torch_pruning as tp
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

    from forgeline.core import CompressContext, DataSpec
    from forgeline.core.compression import compress_model, export, format_table, latency_ms
    from forgeline.plugins.compress import Distill, Prune, QatInt8

    torch.manual_seed(0)
    xtr, ytr, xte, yte = data()
    fit = trainer(xtr, ytr)
    model = fit(cnn(), args.epochs or (3 if args.quick else 8))
    bench = xte[:64]
    ctx = CompressContext(spec=DataSpec("classification", 10, (1, 32, 32)), example_inputs=bench[:4], fit=fit,
                          evaluate=lambda m: {"val_accuracy": accuracy(m, xte, yte)},
                          teacher=copy.deepcopy(model).eval(), batches=lambda n: iter(()))

    print("forgeline (prune 50% -> qat-int8 -> distill -> TorchScript):")
    ours = compress_model(copy.deepcopy(model), [("compress.0", Prune({"ratio": 0.5, "epochs": 1})),
                                                 ("compress.1", QatInt8({"epochs": 1})),
                                                 ("compress.2", Distill({"epochs": 1}))],
                          ctx, latency_inputs=bench, metric="val_accuracy")
    print(format_table(ours.table, "val_accuracy"))

    print("by hand (torch-pruning MetaPruner 50% + fine-tune, FX QAT x86, TorchScript):")
    base_ms = latency_ms(copy.deepcopy(model).eval(), bench)
    m = copy.deepcopy(model)
    tp.pruner.MetaPruner(m, bench[:4], importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                         ignored_layers=[m[-1]]).step()
    fit(m, 1)
    pruned_ms, pruned_acc = latency_ms(torch.jit.freeze(torch.jit.trace(m.eval(), bench)), bench), accuracy(m, xte, yte)
    torch.backends.quantized.engine = "x86"
    q = prepare_qat_fx(copy.deepcopy(m).train(), get_default_qat_qconfig_mapping("x86"), (bench[:4],))
    fit(q, 1)
    q = convert_fx(q.eval())
    q_ts = export(q, bench, None)
    q_ms, q_acc = latency_ms(q_ts, bench), accuracy(q, xte, yte)
    print(f"  original {base_ms:.1f} ms {100 * accuracy(model, xte, yte):.1f}% | pruned (scripted) "
          f"{base_ms / pruned_ms:.2f}x {100 * pruned_acc:.1f}% | pruned + INT8 (scripted) {base_ms / q_ms:.2f}x "
          f"{100 * q_acc:.1f}%")
    rows = {r["version"]: r for r in ours.table}
    print(f"ratio forgeline/by-hand, pruned + INT8 speed: {rows['exported']['speed'] / (base_ms / q_ms):.2f}x "
          f"(accuracy forgeline {100 * rows['exported']['val_accuracy']:.1f}% vs by hand {100 * q_acc:.1f}%)")


if __name__ == "__main__":
    main()
