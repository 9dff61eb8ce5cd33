"""Semantic cache quality on public labelled pairs: wrong answers per hit, and recall.

    .venv/bin/python bench/semantic_eval.py PAIRS.jsonl [...] [--delta 0.01 0.05] [--tune]

Each line of a pairs file is ``{"a": ..., "b": ..., "label": 0|1}``: a and b are two
requests, label 1 when people judged them duplicates (the same answer serves both). The
public sets this was run on, and where to get them, are in the README (Quora Question Pairs,
the Microsoft Research Paraphrase Corpus). Rows are split in two by a hash of the pair:
`--tune` searches the recipe's weights on the tune half only; the report is always on the
test half, which nothing was tuned on.

Per pair, as the gateway does it: `a` is stored alone in its partition, `b` is looked up.
Reported on the test half:

- the **learned bound** (what the gateway runs): the pairs arrive in a random order, the
  cache starts with no evidence, each candidate is served, explored or missed by
  `evidence.decide`; an exploration is judged by the label (a perfect judge: the fresh
  answer agrees with the stored one exactly when the pair is a duplicate). Served, wrong
  among served (the error), recall (duplicates served);
- **plain cosine** at the threshold with the same error on this half (chosen with hindsight,
  which flatters it): the old content-only embedding without guards, and the new recipe;
- the recipe's cosine with and without the near-miss guards, at equal error.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from tollway.cache.semantic import WordLlamaEmbedder, near_miss
from tollway.cache.semantic.content import embedding_text
from tollway.cache.semantic.evidence import Pool, decide
from tollway.cache.semantic.recipe import Recipe, frame, order


@dataclass
class Pair:
    a: str
    b: str
    label: int
    blocks: np.ndarray  # cosine of the four views: content, raw, frame, order
    guard: str | None  # the first near-miss guard that refuses b for a

    @property
    def guarded(self) -> bool:
        return self.guard is not None


def load(paths: list[str]) -> list[tuple[str, str, int]]:
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = orjson.loads(line)
                rows.append((r["a"], r["b"], int(r["label"])))
    return rows


def half(a: str, b: str) -> str:
    h = hashlib.blake2b(f"{a}\0{b}".encode(), digest_size=2).digest()[0]
    return "tune" if h % 2 == 0 else "test"


def unit(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.maximum(n, 1e-12)


def prepare(rows: list[tuple[str, str, int]], emb: WordLlamaEmbedder) -> list[Pair]:
    a = [r[0] for r in rows]
    b = [r[1] for r in rows]
    ca = emb.embed([embedding_text(t) for t in a])
    cb = emb.embed([embedding_text(t) for t in b])
    ra, rb = emb.embed(a), emb.embed(b)
    fa, fb = unit(np.stack([frame(t) for t in a])), unit(np.stack([frame(t) for t in b]))
    oa = unit(np.stack([order(embedding_text(t)) for t in a]))
    ob = unit(np.stack([order(embedding_text(t)) for t in b]))
    cos = np.stack([(ca * cb).sum(1), (ra * rb).sum(1), (fa * fb).sum(1), (oa * ob).sum(1)], 1)
    out = []
    for i, (x, y, lab) in enumerate(rows):
        why = near_miss(y, x)
        out.append(Pair(x, y, lab, cos[i], why.split(":")[0] if why else None))
    return out


def score(p: Pair, w: tuple[float, float, float, float]) -> float:
    sq = np.square(np.asarray(w))
    return float((p.blocks * sq).sum() / sq.sum())


def at_error(scores: list[tuple[float, int]], error: float,
             dup: int) -> tuple[float, float, int]:
    """(threshold, recall, served) of the lowest threshold whose served error <= error;
    recall over all `dup` duplicates (those a guard refused included)."""
    dup = dup or 1
    best = (1.01, 0.0, 0)
    ok = bad = 0
    for s, lab in sorted(scores, reverse=True):
        ok += lab
        bad += 1 - lab
        if bad / (ok + bad) <= error:
            best = (s, ok / dup, ok + bad)
    return best


def learned(pairs: list[Pair], w: tuple[float, ...], delta: float, floor: float,
            guards: bool, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    order_ = list(pairs)
    rng.shuffle(order_)
    pool = Pool()
    served = wrong = hits = explored = 0
    dup = sum(p.label for p in pairs) or 1
    for p in order_:
        s = score(p, w)  # type: ignore[arg-type]
        if s < floor or (guards and p.guarded):
            continue
        d = decide(pool, None, s, delta, rng.random())
        if d.action == "hit":
            served += 1
            wrong += 1 - p.label
            hits += p.label
        else:
            explored += 1
            pool.add(s, bool(p.label))
    return {"served": served, "wrong": wrong, "error": wrong / served if served else 0.0,
            "recall": hits / dup, "explored": explored}


def tune(pairs: list[Pair], error: float) -> tuple[float, float, float, float]:
    best, best_w = -1.0, (1.0, 0.7, 0.6, 0.4)
    for raw, fr, od in itertools.product((0, 0.4, 0.7, 1.0, 1.4), (0, 0.3, 0.6, 0.9),
                                         (0, 0.2, 0.4, 0.7)):
        w = (1.0, raw, fr, od)
        scores = [(score(p, w), p.label) for p in pairs if not p.guarded]
        _, recall, _ = at_error(scores, error, sum(p.label for p in pairs))
        if recall > best:
            best, best_w = recall, w
    print(f"tuned on {len(pairs)} pairs: weights {best_w} (recall {best:.3f} at error "
          f"{error:.0%}, guards on)", file=sys.stderr)
    return best_w  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pairs", nargs="+")
    ap.add_argument("--delta", type=float, nargs="+", default=[0.01, 0.05])
    ap.add_argument("--floor", type=float, default=0.8)
    ap.add_argument("--tune", action="store_true", help="search the weights on the tune half")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ablation", type=float, default=None,
                    help="also each guard's worth at this error (e.g. 0.2)")
    args = ap.parse_args()
    emb = WordLlamaEmbedder()
    emb.load()
    rows = load(args.pairs)
    halves = {"tune": [r for r in rows if half(r[0], r[1]) == "tune"],
              "test": [r for r in rows if half(r[0], r[1]) == "test"]}
    r = Recipe()
    w = (r.content, r.raw, r.frame, r.order)
    if args.tune:
        w = tune(prepare(halves["tune"], emb), min(args.delta))
    test = prepare(halves["test"], emb)
    dup = sum(p.label for p in test)
    print(f"test half: {len(test)} pairs, {dup} duplicates, {len(test) - dup} not; "
          f"recipe weights {w}\n")
    print("| | δ | served | wrong | error | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for delta in args.delta:
        for guards in (False, True):
            runs = [learned(test, w, delta, args.floor, guards, seed)
                    for seed in range(args.seeds)]
            m = {k: sum(x[k] for x in runs) / len(runs) for k in runs[0]}
            worst = max(x["error"] for x in runs)
            print(f"| learned bound, guards {'on' if guards else 'off (default)'}, mean of "
                  f"{args.seeds} orders | {delta:.0%} | {m['served']:.0f} | {m['wrong']:.1f} "
                  f"| {m['error']:.2%} (worst {worst:.2%}) | {m['recall']:.1%} |")
            if not guards:
                mean = m
        err = max(mean["error"], 1e-9)
        for name, ww, guards in (
                ("plain cosine, content words only, no guards (before)", (1, 0, 0, 0), False),
                ("plain cosine, recipe, no guards", w, False),
                ("plain cosine, recipe, guards", w, True)):
            scores = [(score(p, ww), p.label) for p in test if not (guards and p.guarded)]
            t, recall, served = at_error(scores, err, dup)
            print(f"| {name}, at the same error (threshold {t:.3f}) | {delta:.0%} | {served} "
                  f"| | ≤{err:.2%} | {recall:.1%} |")
    if args.ablation is not None:
        ablation(test, w, args.ablation)


def ablation(test: list[Pair], w: tuple[float, ...], error: float) -> None:
    """Each guard's worth at equal error: recall with every guard, and with every guard but
    this one (the pairs it refused first let through). A guard earns its place when taking
    it out lowers the recall reachable at this error."""
    dup = sum(p.label for p in test)
    full = at_error([(score(p, w), p.label) for p in test if not p.guarded], error, dup)
    print(f"\nguards at error {error:.0%}: every guard: recall {full[1]:.1%}\n")
    print("| guard | refused (duplicates / not) | recall without it | verdict |")
    print("|---|---:|---:|---|")
    for rule in sorted({p.guard for p in test if p.guard}):
        kept = [(score(p, w), p.label) for p in test if not p.guarded or p.guard == rule]
        _, recall, _ = at_error(kept, error, dup)
        refused = [p for p in test if p.guard == rule]
        dups = sum(p.label for p in refused)
        verdict = "keeps its place" if recall < full[1] else "no gain here"
        print(f"| {rule} | {dups} / {len(refused) - dups} | {recall:.1%} | {verdict} |")


if __name__ == "__main__":
    main()
