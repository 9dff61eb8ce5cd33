"""Semantic-cache latency: embed, index search, guards and full lookup at 10k and 100k entries.

    .venv/bin/python bench/semantic.py [--sizes 10000 100000] [--queries 2000]
                                       [--only matcher|gateway]

First all entries go into ONE partition (the worst case), which measures the usearch int8 path
plus the exact float16 re-score; then the same number of entries is spread over partitions of 20
(the usual case: brute force). Queries alternate between paraphrases of stored texts (hits: the
guards run) and new texts from the same templates (hits when they repeat a stored request).
Single thread, WordLlama 256-d, the default threshold. Prints p50/p99 in microseconds.

The gateway section then measures what a request waits for: ``await SemanticCache.lookup``,
the object the gateway runs, with its executor hop and deadline, over the largest size (spread
over partitions of 20, then in one partition). The queries run twice: on an idle event
loop (the floor) and while the loop is busy with other work in 200 us slices (a loaded gateway,
whose lookup thread shares the GIL with the busy loop thread). Each pass gets queries of its
own, so no guard memo is warm from an earlier pass.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from tollway.cache.feed import FeedRecord
from tollway.cache.semantic import SemanticMatcher, WordLlamaEmbedder, near_miss
from tollway.cache.semantic.features import _extract  # uncached extraction: the cold cost
from tollway.cache.semantic.recipe import Recipe
from tollway.cache.semantic_cache import SemanticCache
from tollway.config.model import SemanticCacheConfig
from tollway.observe.metrics import Metrics  # its own CollectorRegistry: no global state

VERBS = "reset change update delete export find cancel enable configure rename".split()
THINGS = (
    "password email invoice account subscription profile phone number billing address "
    "api key team member shipping label order report dashboard webhook backup"
).split(" ")
PLACES = "on the web app|in the mobile app|from the admin console|through the API|on Linux".split(
    "|"
)
FORMS = [
    "How do I {v} my {t} {p}?",
    "What's the way to {v} the {t} {p}?",
    "Can you explain how to {v} a {t} {p} for {n} users?",
    "Why can't I {v} my {t} {p} after {n} days?",
]


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        form = FORMS[i % len(FORMS)]
        texts.append(
            form.format(v=rng.choice(VERBS), t=rng.choice(THINGS), p=rng.choice(PLACES), n=i)
        )
    return texts


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49] * 1e6:8.1f}  p99 {cuts[98] * 1e6:8.1f}"


def timed(fn: Callable[[], object], samples: list[float]) -> None:
    start = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - start)


def queries_for(texts: list[str], queries: int, seed: int = 1) -> tuple[list[str], list[int]]:
    """Alternately a paraphrase of a stored text and a new text, each with the key of the stored
    text whose partition it is looked up in."""
    rng = random.Random(seed)
    keys = [rng.randrange(len(texts)) for _ in range(queries)]
    probes = [texts[key].replace("How do I", "How can I") for key in keys]
    probes = list(itertools.chain(*zip(probes, corpus(queries, seed=-seed), strict=True)))
    probes = probes[:queries]
    keys = list(itertools.chain(*zip(keys, keys, strict=True)))[:queries]
    return probes, keys


def run(size: int, queries: int, per_partition: int | None = None) -> None:
    embedder = WordLlamaEmbedder()
    matcher = SemanticMatcher(embedder, max_vectors=size)
    group = per_partition or size

    def part(key: int) -> int:
        return key // group

    texts = corpus(size, seed=size)
    start = time.perf_counter()
    vectors = Recipe().vectors(embedder, texts)  # what matcher.embed embeds
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    for key, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        matcher.add(part(key), key, text, vector=vector)
    build_s = time.perf_counter() - start
    probes, keys = queries_for(texts, queries)
    embed_t: list[float] = []
    lookup_t: list[float] = []
    total_t: list[float] = []
    hits = 0
    for probe, key in zip(probes, keys, strict=True):  # each searched once: no warm repeats
        start = time.perf_counter()
        vector = matcher.embed(probe)
        embedded = time.perf_counter()
        hits += matcher.lookup(part(key), probe, texts.__getitem__, vector=vector) is not None
        done = time.perf_counter()
        embed_t.append(embedded - start)
        lookup_t.append(done - embedded)
        total_t.append(done - start)
    search_t: list[float] = []
    for i, probe in enumerate(corpus(queries, seed=-2)):  # fresh queries: the index alone
        vector = matcher.embed(probe)
        timed(partial(matcher.index.search, part(i * 7919 % size), vector, 5), search_t)
    layout = (
        "one partition (usearch int8)"
        if group == size
        else f"{len(matcher.index):,} partitions of {group} (brute force)"
    )
    print(f"\n{matcher.index.size:,} entries in {layout}")
    print(f"  bulk embed {embed_s / size * 1e6:.1f} us/text, add {build_s / size * 1e6:.0f} us/vec")
    print(f"  embed                 {percentiles(embed_t)}")
    print(f"  lookup (search+guards){percentiles(lookup_t)}")
    print(f"  embed + lookup        {percentiles(total_t)}   hit rate {hits / len(probes):.2f}")
    print(f"  index search alone    {percentiles(search_t)}")


def guards() -> None:
    """Cold (first sight of a text) and warm (memoised) guard cost on ~200-token prompts."""
    base = (
        "I have a Python service that reads 3 config files from /etc/app and settings.yaml, and "
        "I want to migrate it to Rust without breaking the API. It handles about 1,200 requests "
        "per second on two cores. What's the best way to restructure the code so the 'loader' "
        "module can be replaced step by step? Please don't suggest rewriting everything at once; "
        "I need an incremental plan with at most five stages, each testable on its own, and an "
        "estimate of how long each stage might take for a team of three engineers. "
    ) * 2
    plain = "how do i reset my password and change the email on my account " * 15
    for name, text in (("mixed", base), ("plain", plain)):
        cold: list[float] = []
        for i in range(2000):
            timed(partial(_extract, f"{text}{i}"), cold)
        warm: list[float] = []
        other = text.replace("five stages", "six stages")
        near_miss(text, other)
        for _ in range(2000):
            timed(partial(near_miss, text, other), warm)
        print(f"  guards, {name} 200-token text: extract {percentiles(cold)}; "
              f"near_miss on memoised pair {percentiles(warm)}")  # fmt: skip


BUSY_SLICE_S = 200e-6  # a busy gateway's event loop: pure-Python work between awaits


async def _busy_loop(stop: asyncio.Event) -> None:
    """Keep the event loop thread busy as a loaded gateway's is (parsing, metering, metrics)."""
    while not stop.is_set():
        end = time.perf_counter() + BUSY_SLICE_S
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def _timed_lookups(cache: SemanticCache, probes: list[tuple[str, str]],
                         busy: bool) -> tuple[list[float], dict[str, int]]:
    stop = asyncio.Event()
    burner = asyncio.create_task(_busy_loop(stop)) if busy else None
    samples: list[float] = []
    outcomes: dict[str, int] = {}
    try:
        for partition, text in probes:  # one at a time: the latency one request adds
            if cache._worker.pending:  # a timed-out lookup still holds the cache's thread
                await cache._run("call", int, ())
            start = time.perf_counter()
            found = await cache.lookup(partition, text)
            samples.append(time.perf_counter() - start)
            outcomes[found.outcome] = outcomes.get(found.outcome, 0) + 1
    finally:
        stop.set()
        if burner is not None:
            await burner
    return samples, outcomes


async def gateway(size: int, queries: int, per_partition: int | None) -> None:
    """``await SemanticCache.lookup`` at ``size`` entries, as the cache stage calls it."""
    cache = SemanticCache(SemanticCacheConfig(enabled=True, max_vectors=size), Metrics())
    await cache.start()  # loads WordLlama in the cache's thread
    try:
        matcher = cache._matcher
        assert matcher is not None
        group = per_partition or size

        def part(key: int) -> str:  # the shape of a real partition: scope|model|digest
            return f"agent=bench|gpt-4o-mini|{key // group:032x}"

        texts = corpus(size, seed=size)
        start = time.perf_counter()
        # Real vectors, as matcher.embed would make them (content words only), in bulk.
        vectors = matcher.embed_many(texts)
        embed_s = time.perf_counter() - start
        expires = time.time() + 3600
        start = time.perf_counter()
        for first in range(0, size, 1000):
            await cache._add([
                FeedRecord(key, part(key), texts[key], f"s:agent=bench:gpt-4o-mini:{key:016x}",
                           expires, cache.model, vectors[key])
                for key in range(first, min(size, first + 1000))
            ])
        add_s = time.perf_counter() - start
        assert cache.size == size == matcher.index.size, (cache.size, matcher.index.size)
        layout = ("one partition (usearch int8)" if group == size
                  else f"{len(matcher.index):,} partitions of {group} (brute force)")
        print(f"\ngateway lookup, {size:,} entries in {layout}: bulk embed "
              f"{embed_s / size * 1e6:.1f} us/text, add {add_s / size * 1e6:.0f} us/entry")

        def pairs(seed: int, n: int) -> list[tuple[str, str]]:
            probes, keys = queries_for(texts, n, seed)
            return [(part(key), probe) for probe, key in zip(probes, keys, strict=True)]

        await _timed_lookups(cache, pairs(3, 50), busy=False)  # first-call costs out of the way
        for seed, busy in ((1, False), (2, True)):
            samples, outcomes = await _timed_lookups(cache, pairs(seed, queries), busy)
            label = "busy event loop" if busy else "idle event loop"
            seen = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            print(f"  await cache.lookup, {label}: {percentiles(samples)}   "
                  f"max {max(samples) * 1e6:8.1f}   ({seen})")
    finally:
        await cache.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--only", choices=("matcher", "gateway"),
                        help="run only the matcher sections or only the gateway lookup")
    args = parser.parse_args()
    WordLlamaEmbedder().load()
    if args.only != "gateway":
        print("guard cost (us)")
        guards()
        for size in args.sizes:
            run(size, args.queries)
        run(max(args.sizes), args.queries, per_partition=20)
    if args.only != "matcher":
        size = max(args.sizes)
        for per_partition in (20, None):
            asyncio.run(gateway(size, args.queries, per_partition))


if __name__ == "__main__":
    main()
