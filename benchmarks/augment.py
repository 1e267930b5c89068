"""Augmentation throughput: forgeline's augmenters against the libraries called directly.

- images/s through the ``image`` augmenter vs the same ``albumentations.Compose`` in a plain
  loop over the same images (ratio forgeline / direct, target >= 0.95);
- CutMix and MixUp cost per batch against one training step of the small CNN on that batch;
- text documents/s through ``text-eda``.

    python benchmarks/augment.py            # modest sizes (2-core CPU)
    python benchmarks/augment.py --full     # the issue's sizes
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def race(ours, peer, repeats: int) -> tuple[float, float]:
    """Fastest time of each, timed alternately so that load from other processes hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(repeats):
        for i, fn in ((0, ours), (1, peer)) if r % 2 == 0 else ((1, peer), (0, ours)):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return min(times[0]), min(times[1])


def images(n: int, size: int, repeats: int) -> None:
    import albumentations as A

    from forgeline.core import Table
    from forgeline.plugins.augment import Image
    import pandas as pd

    rng = np.random.default_rng(0)
    arr = rng.random((n, 3, size, size), dtype=np.float32)
    table = Table.from_frame(pd.DataFrame({"label": np.zeros(n, dtype=np.int64)}), "label", arrays={"image": arr})
    spec = [{"horizontal_flip": {"p": 0.5}}, {"color_jitter": [0.8, 0.8, 0.8, 0.2]}, {"affine": {"rotate": 10}}]
    aug = Image(transforms=spec)
    direct = A.Compose([A.HorizontalFlip(p=0.5), A.ColorJitter(0.8, 0.8, 0.8, 0.2), A.Affine(rotate=10)], seed=0)
    hwc = [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arr]  # the peer gets H x W x C images ready
    ours, peer = race(lambda: aug.transform_rows(table, np.random.default_rng(0)),
                      lambda: [direct(image=im)["image"] for im in hwc], 2 * repeats + 1)
    print(f"image  {n} x 3x{size}x{size}: forgeline {n / ours:,.0f} img/s, albumentations {n / peer:,.0f} img/s, "
          f"ratio {peer / ours:.3f}")


def batches(batch: int, repeats: int) -> None:
    import torch

    from forgeline.core import DataSpec, Modality
    from forgeline.plugins.augment import CutMix, MixUp
    from forgeline.plugins.models.cnn import CNN

    from forgeline.plugins.datasets.sklearn_builtin import Digits

    digits = Digits(as_image=True, scale=True).load()
    cnn = CNN()
    cnn.fit_inputs(digits)
    spec = DataSpec("classification", 10, (1, 8, 8), modality=Modality.IMAGE)
    model = cnn.build(spec)
    opt = torch.optim.AdamW(model.parameters())
    x, y = cnn.inputs(digits)[:batch], torch.from_numpy(digits.y.to_numpy()[:batch])
    g = torch.Generator().manual_seed(0)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    t_step = best(lambda: [step() for _ in range(20)], repeats) / 20
    for aug in (CutMix(), MixUp()):
        t_aug = best(lambda: [aug.augment_batch({"x": x, "target": y}, g, spec) for _ in range(20)], repeats) / 20
        print(f"{aug.name:6} batch {batch} of 1x8x8: {t_aug * 1e3:.3f} ms vs CNN step {t_step * 1e3:.2f} ms "
              f"({100 * t_aug / t_step:.1f}% of the step)")


def text(n: int, repeats: int) -> None:
    from forgeline.core import StageContext
    from forgeline.plugins.augment import TextEda
    from forgeline.plugins.datasets.synthetic import Reviews

    table = Reviews(rows=n).load(StageContext(seed=0))
    aug = TextEda(synonym_replacement=0.3, random_insertion=0.2, sentence_shuffle=0.5)
    aug.augment(table.take(table.row_ids[:5]))  # builds the thesaurus and nlpaug once
    t = best(lambda: aug.augment(table), repeats)
    print(f"text-eda {n} reviews: {n / t:,.0f} docs/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the issue's sizes (10,000 32x32 images, 5,000 docs)")
    a = ap.parse_args()
    n_img, n_txt, repeats = (10_000, 5_000, 5) if a.full else (2_000, 1_000, 3)
    images(n_img, 32, repeats)
    batches(256, repeats)
    text(n_txt, repeats)


if __name__ == "__main__":
    main()
