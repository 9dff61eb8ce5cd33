"""The semantic cache's error bound, learned online: decisions, verdicts and their evidence.

`decide` says whether a candidate is served, explored (forwarded anyway and judged) or
missed; `judge` compares the stored answer with the fresh one of an exploration; `note`
keeps the verdict, per model and per entry (cache/semantic/evidence.py has the estimates),
and shares it with the other replicas through the semantic feed (Redis), so every replica
decides on all of the evidence.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tollway.cache.semantic.evidence import (
    EXPLORE_C,
    Decision,
    EntryEvidence,
    Pool,
    decide,
    explore_rate,
)
from tollway.cache.semantic.judge import exact, judge_payload, judge_reply
from tollway.providers.own_call import ask, record_own

if TYPE_CHECKING:
    from tollway.config.model import SemanticCacheConfig
    from tollway.observe.metrics import Metrics
    from tollway.routing.table import ModelRoute
    from tollway.state.base import State

log = logging.getLogger(__name__)
MAX_ENTRIES = 200_000  # entries with evidence kept; the oldest go first
EmbedPair = Callable[[str, str], Awaitable[float]]  # cosine of two texts' raw embeddings


class Learner:
    def __init__(self, cfg: SemanticCacheConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.pools: dict[str, Pool] = {}
        self.entries: dict[int, EntryEvidence] = {}
        self.rng = random.Random()
        self.publish: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.embed_pair: EmbedPair | None = None
        self.resolve: Callable[[str], ModelRoute | None] | None = None  # judge model
        self.state: State | None = None

    def pool(self, model: str) -> Pool:
        found = self.pools.get(model)
        if found is None:
            found = self.pools[model] = Pool()
        return found

    # --- deciding ------------------------------------------------------------------------
    def decide(self, model: str, key: int, similarity: float, delta: float) -> Decision:
        if self.cfg.threshold is not None:  # a fixed threshold: the matcher already held to it
            return Decision("hit", 1.0, self.cfg.threshold)
        d = decide(self.pool(model), self.entries.get(key), similarity, delta,
                   self.rng.random(), EXPLORE_C, self.cfg.explore_min)
        if d.action == "explore" and d.threshold is not None and similarity < d.threshold \
                and self.cfg.judge.kind == "model":
            # Below the threshold an exploration costs a judge call: sampled like the rest.
            n = sum(self.pool(model).above(d.threshold))
            if self.rng.random() >= explore_rate(n, EXPLORE_C, self.cfg.explore_min):
                d = Decision("miss", d.confidence, d.threshold)
        self.metrics.child(self.metrics.semantic_decisions, model, d.action).inc()
        return d

    # --- judging -------------------------------------------------------------------------
    async def judge(self, question: str, cached: str, fresh: str) -> bool | None:
        j = self.cfg.judge
        if exact(cached, fresh):
            return True
        if j.kind == "exact":
            return False
        if j.kind == "embedding":
            if self.embed_pair is None:
                return None
            return await self.embed_pair(cached, fresh) >= j.threshold
        return await self._ask_model(question, cached, fresh)

    async def _ask_model(self, question: str, cached: str, fresh: str) -> bool | None:
        route = self.resolve(self.cfg.judge.model or "") if self.resolve else None
        if route is None:
            return None
        started = time.time()
        data = await ask(route, judge_payload("", question, cached, fresh), 30.0)
        if data is None:
            return None
        await record_own(self.state, route, data.get("usage") or {}, started,
                         "semantic-cache")
        return judge_reply(data)

    # --- evidence ------------------------------------------------------------------------
    async def note(self, model: str, key: int, similarity: float, ok: bool | None) -> None:
        verdict = "unjudged" if ok is None else "correct" if ok else "wrong"
        self.metrics.child(self.metrics.semantic_verdicts, model, verdict).inc()
        if ok is None:
            return
        self.apply(model, key, similarity, ok)
        if self.publish is not None:
            await self.publish({"model": model, "key": key, "s": similarity, "ok": ok})

    def apply(self, model: str, key: int, similarity: float, ok: bool) -> None:
        """A verdict, ours or another replica's."""
        pool = self.pool(model)
        pool.add(similarity, ok)
        ev = self.entries.get(key)
        if ev is None:
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.pop(next(iter(self.entries)))
            ev = self.entries[key] = EntryEvidence()
        ev.add(similarity, ok)
        self._gauges(model, pool)

    def _gauges(self, model: str, pool: Pool) -> None:
        delta = self.cfg.max_error_rate
        t = pool.threshold(delta)
        self.metrics.child(self.metrics.semantic_threshold, model).set(
            t if t is not None else 1.0)
        err = pool.error_at(t)
        self.metrics.child(self.metrics.semantic_error, model).set(
            err if err is not None else 0.0)

    def view(self, key: int) -> dict[str, Any] | None:
        ev = self.entries.get(key)
        if ev is None:
            return None
        return {"verdicts": [{"similarity": s, "correct": ok} for s, ok in ev.seen],
                "floor": round(ev.floor, 4)}

    def summary(self) -> dict[str, Any]:
        out = {}
        for model, pool in self.pools.items():
            t = pool.threshold(self.cfg.max_error_rate)
            ok, bad = pool.above(t) if t is not None else (0, 0)
            out[model] = {"verdicts": pool.n, "threshold": t, "served_correct": ok,
                          "served_wrong": bad, "observed_error": pool.error_at(t)}
        return out

