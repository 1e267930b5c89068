"""Cleaning benchmark: forgeline's cleaners against the same work done by hand with the peers.

Runs, on the same data in one process, and prints forgeline vs peer and their ratio:

1. numeric: sigma-outliers (clip) + impute (median, indicators) + robust-scale on N x 20
   against pandas + scikit-learn written by hand;
2. near-duplicate text: ``use: dedup`` with its defaults (MinHash LSH in numpy, exact Jaccard
   check) against datasketch ``MinHashLSH`` by hand (word sets, threshold 0.8, 128 perms) on
   generated corpora of several lengths (10 to 1,000 words), edit kinds and rates, one with
   a long boilerplate shared by every document, plus the credit dataset's templated notes
   (recall, precision, documents per CPU second, fastest of 3 alternating runs each: both
   sides are single-threaded, and CPU time does not count the time other jobs of a shared
   machine take), then SimHash alone on a million short documents;
3. label errors: scikit-learn's breast-cancer, wine, digits and iris and six generated sets
   (2 to 8 classes, balanced and not, well and badly fitted by a logistic model) with 4, 8,
   15 and 25% of labels flipped, uniformly or class-conditionally (several seeds),
   forgeline's confident learning against cleanlab's ``find_label_issues`` on the same
   out-of-fold probabilities.

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

MIXED = ("replace", "insert", "delete", "swap")
#: the corpora of the near-duplicate comparison: (name, words per document, edit kinds, edit
#: rate, words of boilerplate shared by every document). The last two were added after the
#: method was written, as shapes it was not tuned on.
CORPORA = (
    ("short, replace", (10, 10), ("replace",), 0.05, 0),
    ("short, mixed edits", (10, 14), MIXED, 0.05, 0),
    ("40 words, 2 replaced (issue 14)", (40, 40), ("replace",), 0.05, 0),
    ("40-80 words, mixed edits", (40, 80), MIXED, 0.05, 0),
    ("long, mixed edits 3%", (300, 300), MIXED, 0.03, 0),
    ("long, swaps and deletes 6%", (200, 300), ("delete", "swap"), 0.06, 0),
    ("1,000 words, mixed edits 3%", (1000, 1000), MIXED, 0.03, 0),
    ("boilerplate 100 + 50-150 words", (50, 150), MIXED, 0.03, 100),
)


def vocabulary(size: int) -> np.ndarray:
    """Letters-only pseudo-words (a, b, ..., ba, bb, ...): no digits, so every word weighs the same."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = []
    for i in range(size):
        w = ""
        i += 1
        while i:
            i, r = divmod(i, 26)
            w = letters[r] + w
        words.append(w)
    return np.array(words)


def make_documents(n: int, dup_share: float, words: tuple[int, int], seed: int,
                   kinds: tuple[str, ...] = ("replace",), rate: float = 0.0,
                   boilerplate: int = 0) -> tuple[pd.Series, np.ndarray]:
    """Random documents over a 20,000-word vocabulary (Zipf-like frequencies, as in real text);
    a share of them are near copies of an earlier one: re-cased, punctuation and spacing
    changed, and ``max(1, round(rate x words))`` edits drawn from ``kinds`` (replace a word,
    insert one, delete one, swap two neighbours). With ``boilerplate``, every original is
    wrapped in the same header and footer (that many words in all, like a site's navigation
    and legal notice), so distinct documents share much of their text. Returns the
    documents and, per document, the index it copies (-1 for originals)."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(20_000)
    n_dup = int(n * dup_share)
    n_orig = n - n_dup
    lengths = rng.integers(words[0], words[1] + 1, n_orig)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8
    p /= p.sum()
    flat = rng.choice(len(vocab), lengths.sum(), p=p)
    docs = np.split(vocab[flat], np.cumsum(lengths)[:-1])
    if boilerplate:
        shared = vocab[rng.choice(len(vocab), boilerplate, p=p)]
        head, tail = shared[:boilerplate // 2], shared[boilerplate // 2:]
        docs = [np.concatenate([head, d, tail]) for d in docs]
    out = [" ".join(d) for d in docs]
    source = np.full(n, -1)
    src = rng.integers(0, n_orig, n_dup)
    for k, s in enumerate(src):
        w = list(docs[s])
        for _ in range(max(1, round(rate * len(w)))):
            kind = kinds[rng.integers(0, len(kinds))]
            at = int(rng.integers(0, len(w)))
            if kind == "replace":
                w[at] = vocab[rng.integers(0, len(vocab))]
            elif kind == "insert":
                w.insert(at, vocab[rng.integers(0, len(vocab))])
            elif kind == "delete" and len(w) > 1:
                del w[at]
            elif kind == "swap" and at + 1 < len(w):
                w[at], w[at + 1] = w[at + 1], w[at]
        text = " ".join(w)
        out.append((text.upper() if k % 2 else text.capitalize()) + (" !!" if k % 3 else ",  ..."))
        source[n_orig + k] = s
    return pd.Series(out), source


def recall_of(removed: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    truth = source >= 0
    tp = (removed & truth).sum()
    return tp / max(truth.sum(), 1), tp / max(removed.sum(), 1)


def datasketch_dedup(texts: pd.Series, threshold: float, ngram: int) -> np.ndarray:
    """What a user writes with datasketch: normalise, word shingles, MinHash, LSH, query;
    a document goes when LSH returns an earlier one whose estimated Jaccard passes."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    norm = texts.str.lower().str.replace(r"[^\w]+", " ", regex=True).str.split()
    sigs = []
    for i, words in enumerate(norm):
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(words[k:k + ngram]).encode() for k in range(len(words))])
        lsh.insert(i, m)
        sigs.append(m)
    drop = np.zeros(len(texts), dtype=bool)
    for i, m in enumerate(sigs):
        if any(j < i and sigs[j].jaccard(m) >= threshold for j in lsh.query(m)):
            drop[i] = True
    return drop


def text_table(texts: pd.Series) -> Table:
    return Table.from_frame(pd.DataFrame({"comment": texts}), overrides={"comment": {"modality": "text"}})


#: times each side of the near-duplicate comparison runs (alternating); the fastest counts
REPEATS = 3


def fastest_of(*fns, repeats: int = REPEATS) -> list[tuple]:
    """Per function, (result, process CPU seconds, wall seconds) of its fastest run; the
    functions run in turn, ``repeats`` rounds, so a busy spell on a shared machine falls on
    both sides."""
    best = [[None, float("inf"), float("inf")] for _ in fns]
    for _ in range(repeats):
        for slot, fn in zip(best, fns):
            cpu, wall = time.process_time(), time.perf_counter()
            slot[0] = fn()
            slot[1] = min(slot[1], time.process_time() - cpu)
            slot[2] = min(slot[2], time.perf_counter() - wall)
    return [tuple(slot) for slot in best]


def compare_dedup(name: str, texts: pd.Series, score) -> None:
    """One row of the near-duplicate table: forgeline's defaults and datasketch on ``texts``;
    ``score(removed mask)`` gives (recall, precision)."""
    n = len(texts)
    table = text_table(texts)
    (res, cpu_ours, wall_ours), (peer, cpu_peer, wall_peer) = fastest_of(
        lambda: Dedup().fit_apply(table), lambda: datasketch_dedup(texts, 0.8, 1))
    rec, prec = score(np.isin(table.row_ids, res.flagged))
    rec_p, prec_p = score(peer)
    print(f"  {name:<34} {rec:7.4f} {prec:7.4f} {n / cpu_ours:9,.0f} | {rec_p:7.4f} {prec_p:7.4f} "
          f"{n / cpu_peer:8,.0f} | {cpu_peer / cpu_ours:5.1f}x {wall_peer / wall_ours:5.1f}x")


def near_duplicates(n: int, million: int, seed: int) -> None:
    print(f"near-duplicate text, {n:,} documents per corpus, 5% near copies (case, punctuation, edits); "
          f"forgeline `use: dedup` defaults vs datasketch MinHashLSH (word sets, threshold 0.8, 128 perms); "
          f"docs/s per CPU second, ratio by CPU time and by wall time; fastest of {REPEATS} alternating runs each")
    Dedup().fit_apply(text_table(make_documents(500, 0.05, (40, 80), seed)[0]))  # warm-up: imports
    datasketch_dedup(make_documents(500, 0.05, (40, 80), seed)[0], 0.8, 1)
    print(f"  {'corpus':<34} {'recall':>7} {'prec.':>7} {'docs/s':>9} | {'recall':>7} {'prec.':>7} "
          f"{'docs/s':>8} | ratio  (wall)")
    for k, (name, words, kinds, rate, boilerplate) in enumerate(CORPORA):
        texts, source = make_documents(n, 0.05, words, seed + k, kinds, rate, boilerplate)
        compare_dedup(name, texts, lambda removed: recall_of(removed, source))
    templated(n, seed)
    if not million:
        return
    print(f"SimHash dedup alone on {million:,} short documents (8-20 words)")
    short, _ = make_documents(million, 0.05, (8, 20), seed + 1)
    big = text_table(short)
    res, t_big = timed(lambda: Dedup(method="simhash", max_distance=3).fit_apply(big))
    print(f"  {million:,} documents in {t_big:.1f} s ({million / t_big:,.0f} docs/s), "
          f"{res.report['rows_removed']:,} removed")


def templated(n: int, seed: int) -> None:
    """The credit dataset's agent notes: built from a few templates, so distinct notes share
    most words; its copies are lightly edited (word swap or drop, punctuation, case)."""
    from forgeline.plugins.datasets.credit import Credit

    credit = Credit(rows=n).load(StageContext(seed=seed))
    truth = credit.meta["ground_truth"]["duplicate"].to_numpy()

    def score(removed: np.ndarray) -> tuple[float, float]:
        tp = (removed & truth).sum()
        return tp / truth.sum(), tp / max(removed.sum(), 1)

    compare_dedup("credit notes (templated)", credit.frame["comment"].reset_index(drop=True), score)


# --------------------------------------------------------------------------- 3. label errors

#: scikit-learn's shipped classification sets and generated ones of other class counts,
#: separations, balances and shapes (a logistic model fits moons and the two-cluster classes badly)
LABEL_SETS = ("breast-cancer", "wine", "digits", "iris", "make-classification", "imbalanced-binary",
              "three-hard", "eight-classes", "blobs", "moons")
NOISE_KINDS = ("uniform", "class-conditional")


def label_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-learn shipped (or generated) classification set."""
    from sklearn import datasets

    generated = {
        "make-classification": lambda: datasets.make_classification(
            n_samples=2000, n_features=20, n_informative=8, n_classes=4, n_clusters_per_class=2,
            class_sep=1.5, random_state=0),
        "imbalanced-binary": lambda: datasets.make_classification(
            n_samples=1500, n_features=10, n_informative=5, weights=[0.8, 0.2], class_sep=1.0, random_state=1),
        "three-hard": lambda: datasets.make_classification(
            n_samples=900, n_features=15, n_informative=6, n_classes=3, class_sep=0.8, random_state=5),
        "eight-classes": lambda: datasets.make_classification(
            n_samples=2400, n_features=30, n_informative=12, n_classes=8, n_clusters_per_class=1,
            class_sep=1.2, random_state=2),
        "blobs": lambda: datasets.make_blobs(n_samples=1500, centers=5, n_features=6, cluster_std=2.5,
                                             random_state=3),
        "moons": lambda: datasets.make_moons(n_samples=1000, noise=0.25, random_state=4),
    }
    if name in generated:
        return generated[name]()
    load = {"breast-cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
            "digits": datasets.load_digits, "iris": datasets.load_iris}[name]
    return load(return_X_y=True)


def flip_labels(y: np.ndarray, noise: float, rng: np.random.Generator,
                kind: str = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """About ``noise`` of the labels moved to another class.

    uniform: exactly that share of rows (rounded), each to another class drawn uniformly.
    class-conditional: each class has its own rate (weights drawn from 0.25-1.75, scaled so the
    overall share is ``noise``, at most 45%), and its flipped labels mostly (3 in 4) go to one
    partner class (a random cycle over the classes), the rest uniformly: the asymmetric noise of
    confusable classes.
    """
    k = int(y.max()) + 1
    noisy, flip = y.copy(), np.zeros(len(y), bool)
    if kind == "uniform":
        flip[rng.choice(len(y), round(noise * len(y)), replace=False)] = True
        noisy[flip] = (y[flip] + rng.integers(1, k, flip.sum())) % k
        return noisy, flip
    counts = np.bincount(y, minlength=k)
    weight = rng.uniform(0.25, 1.75, k)
    rates = np.minimum(noise * weight * len(y) / (weight * counts).sum(), 0.45)
    cycle = rng.permutation(k)
    partner = np.empty(k, int)
    partner[cycle] = np.roll(cycle, -1)
    for c in range(k):
        rows = rng.choice(np.flatnonzero(y == c), round(rates[c] * counts[c]), replace=False)
        flip[rows] = True
        to_partner = rng.random(len(rows)) < 0.75
        noisy[rows] = np.where(to_partner, partner[c], (c + rng.integers(1, k, len(rows))) % k)
    return noisy, flip


def label_scores(mask: np.ndarray, flip: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, and the share of wrong labels among the rows kept."""
    tp = (mask & flip).sum()
    return tp / max(mask.sum(), 1), tp / flip.sum(), ((~mask) & flip).sum() / max((~mask).sum(), 1)


def at_least_as_good(ours: np.ndarray, peer: np.ndarray) -> bool:
    """Precision and recall at least the peer's, noise left at most the peer's."""
    return ours[0] >= peer[0] - 1e-9 and ours[1] >= peer[1] - 1e-9 and ours[2] <= peer[2] + 1e-9


def label_errors(noises: list[float], seeds: int, sets: tuple[str, ...] = LABEL_SETS, first_seed: int = 0) -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    print(f"label errors: {', '.join(sets)} x noise {', '.join(NOISE_KINDS)} {noises} x {seeds} seeds "
          f"from {first_seed}; out-of-fold probabilities of standardised logistic regression (5 folds), the same for forgeline "
          f"find_suspects (default, and widen=True) and cleanlab find_label_issues (defaults; n_jobs=1, which "
          f"changes only its speed)")
    print(f"  {'data set':<20} {'noise':<17} {'rate':>4}  {'forgeline P / R / left':>24}  "
          f"{'widen P / R / left':>24}  {'cleanlab P / R / left':>24}  at least as good (default, widen)")
    wins, runs, same, contained = np.zeros(2, int), 0, 0, 0
    total = 0
    for name in sets:
        X, y = label_dataset(name)
        for kind in NOISE_KINDS:
            for noise in noises:
                found = []
                for seed in range(first_seed, first_seed + seeds):
                    noisy, flip = flip_labels(y, noise, np.random.default_rng(seed), kind)
                    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
                    probs = cross_val_predict(make_estimator("logistic-regression", seed), X, noisy, cv=cv,
                                              method="predict_proba")
                    ours, wide = find_suspects(noisy, probs).mask, find_suspects(noisy, probs, widen=True).mask
                    peer = find_label_issues(noisy, probs, n_jobs=1)
                    runs += 1
                    same += bool((ours == peer).all())
                    contained += bool((wide >= peer).all())
                    found.append([label_scores(m, flip) for m in (ours, wide, peer)])
                ours, wide, peer = np.mean(found, axis=0)
                ok = [at_least_as_good(ours, peer), at_least_as_good(wide, peer)]
                wins += ok
                total += 1
                cols = "  ".join(f"{m[0]:7.3f} {m[1]:7.3f} {m[2]:7.2%}" for m in (ours, wide, peer))
                print(f"  {name:<20} {kind:<17} {noise:4.0%}  {cols}  {'yes' if ok[0] else 'NO'}, "
                      f"{'yes' if ok[1] else 'NO'}")
    print(f"  forgeline's default flags exactly cleanlab's rows: {same} of {runs} runs; "
          f"widen flags all of them: {contained} of {runs}")
    print(f"  at least as good as cleanlab on all three (means over seeds): default {wins[0]} of {total}, "
          f"widen {wins[1]} of {total}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the numeric benchmark")
    ap.add_argument("--cols", type=int, default=20, help="columns of the numeric benchmark")
    ap.add_argument("--docs", type=int, default=50_000, help="documents per corpus of the near-duplicate comparison")
    ap.add_argument("--million", type=int, default=1_000_000, help="short documents of the SimHash throughput run")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.04, 0.08, 0.15, 0.25],
                    help="shares of labels flipped")
    ap.add_argument("--seeds", type=int, default=5, help="label flips drawn per data set, noise kind and rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-label-seed", type=int, default=0,
                    help="first seed of the label flips (another range re-draws every flip and fold)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", choices=["numeric", "text", "labels"], help="run one benchmark")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.docs, a.million = 50_000, 5_000, 50_000
    if a.only in (None, "numeric"):
        numeric(a.rows, a.cols, a.seed)
    if a.only in (None, "text"):
        near_duplicates(a.docs, a.million, a.seed)
    if a.only in (None, "labels"):
        label_errors(a.noise, a.seeds, first_seed=a.first_label_seed)


if __name__ == "__main__":
    main()
