"""Cleaning benchmark: forgeline's cleaners against the same work done by hand with the peers.

Runs, on the same data in one process, and prints forgeline vs peer and their ratio:

1. numeric: sigma-outliers (clip) + impute (median, indicators) + robust-scale on N x 20
   against pandas + scikit-learn written by hand;
2. near-duplicate text: dedup (SimHash) against datasketch ``MinHashLSH`` by hand on documents
   with injected near-duplicates (recall and documents per second), then SimHash alone on
   a million short documents;
3. label errors: scikit-learn digits with 8.3% of labels flipped, forgeline's confident
   learning against cleanlab's ``find_label_issues`` on the same out-of-fold probabilities.

Full sizes are the defaults; ``--quick`` runs everything small.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from forgeline.core import StageContext, Table
from forgeline.plugins.clean import Dedup, Impute, RobustScale, SigmaOutliers
from forgeline.plugins.clean.label_consistency import find_suspects, make_estimator


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def line(what: str, ours: float, peer: float, unit: str, higher_is_better: bool = False) -> None:
    ratio = ours / peer if higher_is_better else peer / ours
    print(f"  {what:<44} forgeline {ours:10.3f} {unit:<8} peer {peer:10.3f} {unit:<8} "
          f"ratio {ratio:6.2f}x {'(higher = forgeline better)'}")


# --------------------------------------------------------------------------- 1. numeric

def numeric(rows: int, cols: int, seed: int) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import RobustScaler

    print(f"numeric stages on {rows:,} x {cols} (sigma clip k=3 + median fill with indicators + robust scale)")
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (rows, cols)) * rng.uniform(1, 10, cols) + rng.uniform(-5, 5, cols)
    X[rng.random((rows, cols)) < 0.001] *= 50  # outliers
    X[rng.random((rows, cols)) < 0.02] = np.nan  # missing
    names = [f"x{j}" for j in range(cols)]
    frame = pd.DataFrame(X, columns=names)
    table = Table.from_frame(frame)

    def by_hand() -> pd.DataFrame:
        df = frame
        mean, std = df.mean(), df.std()
        df = df.clip(mean - 3 * std, mean + 3 * std, axis=1)
        imputer = SimpleImputer(strategy="median", add_indicator=True)
        filled = imputer.fit_transform(df)
        values, indicators = filled[:, :cols], filled[:, cols:]
        scaled = RobustScaler().fit_transform(values)
        ind_names = [f"{names[j]}__imputed" for j in imputer.indicator_.features_]
        return pd.concat([pd.DataFrame(scaled, columns=names),
                          pd.DataFrame(indicators, columns=ind_names)], axis=1)

    def forgeline() -> Table:
        t = table
        for cleaner in (SigmaOutliers(action="clip"), Impute(strategy="median"), RobustScale(columns=names)):
            t = cleaner.fit_apply(t, StageContext(seed=seed)).table
        return t

    peer, t_peer = timed(by_hand)
    ours, t_ours = timed(forgeline)
    np.testing.assert_allclose(ours.frame[names].to_numpy(), peer[names].to_numpy(), rtol=1e-9, atol=1e-9)
    line("3 numeric stages, seconds", t_ours, t_peer, "s")


# --------------------------------------------------------------------------- 2. near-duplicates

def make_documents(n: int, dup_share: float, words: tuple[int, int], seed: int) -> tuple[pd.Series, np.ndarray]:
    """Random documents over a 20,000-word vocabulary; a share of them are near copies of an
    earlier one: re-cased, punctuation and spacing changed, and one word replaced.
    Returns the documents and, per document, the index it copies (-1 for originals)."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    n_dup = int(n * dup_share)
    n_orig = n - n_dup
    lengths = rng.integers(words[0], words[1] + 1, n_orig)
    # Zipf-like word frequencies, as in real text
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8
    p /= p.sum()
    flat = rng.choice(len(vocab), lengths.sum(), p=p)
    docs = np.split(vocab[flat], np.cumsum(lengths)[:-1])
    out = [" ".join(d) for d in docs]
    source = np.full(n, -1)
    src = rng.integers(0, n_orig, n_dup)
    for k, s in enumerate(src):
        w = list(docs[s])
        w[rng.integers(0, len(w))] = vocab[rng.integers(0, len(vocab))]
        text = " ".join(w)
        out.append((text.upper() if k % 2 else text.capitalize()) + (" !!" if k % 3 else ",  ok."))
        source[n_orig + k] = s
    return pd.Series(out), source


def recall_of(removed: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    truth = source >= 0
    tp = (removed & truth).sum()
    return tp / max(truth.sum(), 1), tp / max(removed.sum(), 1)


def near_duplicates(n: int, million: int, max_distance: int, ngram: int, seed: int) -> None:
    from datasketch import MinHash, MinHashLSH

    print(f"near-duplicate text on {n:,} documents (40-80 words, 5% near copies: case, punctuation, "
          f"one word replaced)")
    texts, source = make_documents(n, 0.05, (40, 80), seed)
    table = Table.from_frame(pd.DataFrame({"comment": texts}), overrides={"comment": {"modality": "text"}})
    Dedup(method="simhash").fit_apply(table.take(table.row_ids[:500]))  # warm-up: imports, regex compile
    res, t_ours = timed(lambda: Dedup(method="simhash", max_distance=max_distance, ngram=ngram).fit_apply(table))
    removed = np.isin(table.row_ids, res.flagged)
    rec_ours, prec_ours = recall_of(removed, source)

    def by_hand(texts: pd.Series = texts) -> np.ndarray:
        # what a user writes with datasketch: normalise, word shingles, MinHash, LSH, query
        lsh = MinHashLSH(threshold=0.7, num_perm=128)
        norm = texts.str.lower().str.replace(r"[^\w]+", " ", regex=True).str.split()
        sigs = []
        for i, words in enumerate(norm):
            m = MinHash(num_perm=128)
            m.update_batch([" ".join(words[k:k + 2]).encode() for k in range(len(words))])
            lsh.insert(i, m)
            sigs.append(m)
        drop = np.zeros(len(texts), dtype=bool)
        for i, m in enumerate(sigs):
            if any(j < i for j in lsh.query(m)):
                drop[i] = True
        return drop

    by_hand(texts[:500])  # warm-up
    peer_removed, t_peer = timed(by_hand)
    rec_peer, prec_peer = recall_of(peer_removed, source)
    print(f"  forgeline simhash d={max_distance} ngram={ngram}: recall {rec_ours:.4f} precision {prec_ours:.4f}; "
          f"datasketch MinHashLSH (threshold 0.7, 128 perms): recall {rec_peer:.4f} precision {prec_peer:.4f}")
    line("documents per second", n / t_ours, n / t_peer, "docs/s", higher_is_better=True)

    if not million:
        return
    print(f"SimHash dedup alone on {million:,} short documents (8-20 words)")
    short, _ = make_documents(million, 0.05, (8, 20), seed + 1)
    big = Table.from_frame(pd.DataFrame({"comment": short}), overrides={"comment": {"modality": "text"}})
    res, t_big = timed(lambda: Dedup(method="simhash", max_distance=3).fit_apply(big))
    print(f"  {million:,} documents in {t_big:.1f} s ({million / t_big:,.0f} docs/s), "
          f"{res.report['rows_removed']:,} removed")


# --------------------------------------------------------------------------- 3. label errors

def label_errors(noise: float, seed: int, estimator: str) -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    print(f"label errors on scikit-learn digits, {noise:.1%} of labels flipped, out-of-fold "
          f"probabilities from {estimator} (5 folds), same probabilities for both")
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < noise
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    probs = cross_val_predict(make_estimator(estimator, seed), X, noisy, cv=cv, method="predict_proba")

    def score(mask: np.ndarray) -> tuple[float, float, float]:
        tp = (mask & flip).sum()
        return tp / max(mask.sum(), 1), tp / flip.sum(), ((~mask) & flip).sum() / (~mask).sum()

    ours, t_ours = timed(lambda: find_suspects(noisy, probs).mask)
    peer, t_peer = timed(lambda: find_label_issues(noisy, probs))
    for name, mask, secs in (("forgeline", ours, t_ours), ("cleanlab", peer, t_peer)):
        p, r, left = score(mask)
        print(f"  {name:<10} precision {p:.3f}  recall {r:.3f}  noise left after dropping {left:.2%}  "
              f"({mask.sum()} flagged, {secs * 1000:.0f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the numeric benchmark")
    ap.add_argument("--cols", type=int, default=20, help="columns of the numeric benchmark")
    ap.add_argument("--docs", type=int, default=50_000, help="documents of the near-duplicate comparison")
    ap.add_argument("--million", type=int, default=1_000_000, help="short documents of the SimHash throughput run")
    ap.add_argument("--max-distance", type=int, default=9, help="SimHash Hamming distance for the comparison")
    ap.add_argument("--ngram", type=int, default=1, help="SimHash word n-grams for the comparison")
    ap.add_argument("--noise", type=float, default=0.083, help="share of digits labels flipped")
    ap.add_argument("--estimator", default="knn", help="label-consistency estimator for the OOF probabilities")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", choices=["numeric", "text", "labels"], help="run one benchmark")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.docs, a.million = 50_000, 5_000, 50_000
    if a.only in (None, "numeric"):
        numeric(a.rows, a.cols, a.seed)
    if a.only in (None, "text"):
        near_duplicates(a.docs, a.million, a.max_distance, a.ngram, a.seed)
    if a.only in (None, "labels"):
        label_errors(a.noise, a.seed, a.estimator)


if __name__ == "__main__":
    main()
