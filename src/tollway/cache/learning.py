"""The semantic cache's error bound, learned online: decisions, verdicts and their evidence.

`decide` says whether a candidate is served, explored (forwarded anyway and judged) or
missed; `judge` compares the stored answer with the fresh one of an exploration; `note`
keeps the verdict, per model and per entry (cache/semantic/evidence.py has the estimates),
and shares it with the other replicas through the semantic feed (Redis), so every replica
decides on all of the evidence.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from tollway.cache.semantic.evidence import (
    EXPLORE_C,
    Decision,
    EntryEvidence,
    Pool,
    decide,
    explore_rate,
)
from tollway.cache.semantic.judge import exact, judge_payload, judge_reply
from tollway.protocols.openai import CHAT
from tollway.state.records import StepRecord

if TYPE_CHECKING:
    from tollway.config.model import SemanticCacheConfig
    from tollway.observe.metrics import Metrics
    from tollway.routing.table import ModelRoute
    from tollway.state.base import State

log = logging.getLogger(__name__)
SELF_AGENT = "tollway"
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
        dep = route.deployments[0]
        payload = judge_payload(dep.upstream_model, question, cached, fresh)
        started = time.time()
        try:
            async with dep.provider.session.post(
                    dep.provider.url(CHAT, dep.upstream_model), data=orjson.dumps(payload),
                    headers=dep.provider.request_headers({}), timeout=30) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return None
            data = orjson.loads(body)
        except (TimeoutError, OSError, orjson.JSONDecodeError) as exc:
            log.warning("semantic cache judge %s failed: %s", route.name, exc)
            return None
        if not isinstance(data, dict):
            return None
        await self._record(route, data.get("usage") or {}, started)
        return judge_reply(data)

    async def _record(self, route: ModelRoute, usage: Any, started: float) -> None:
        if self.state is None or not isinstance(usage, dict):
            return
        tin = int(usage.get("prompt_tokens") or 0)
        tout = int(usage.get("completion_tokens") or 0)
        step = StepRecord(
            request_id=f"judge_{os.urandom(6).hex()}", time=started, agent=SELF_AGENT,
            team=SELF_AGENT, session="semantic-cache", endpoint="chat", model=route.name,
            requested_model=route.name, provider=route.provider.name, status=200,
            input_tokens=tin, output_tokens=tout, usage_source="upstream",
            cost_usd=route.cost(tin, tout, 0, 0), latency_s=round(time.time() - started, 6))
        try:
            await self.state.ledger.record(step)
        except Exception:
            log.exception("could not record the semantic cache judge's spend")

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

