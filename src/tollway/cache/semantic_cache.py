"""The semantic cache as the gateway runs it: deadlines, an executor, expiry and sharing.

Embedding and searching run in one executor thread, never on the event loop; a lookup that
does not finish within ``timeout_ms`` (or finds ``max_pending`` lookups already queued) is a
miss and the request goes upstream without waiting. The index holds vectors and the texts
they were made from; bodies live in the State's cache (a key with a TTL), so with Redis every
replica serves the same bodies and an expired or purged body is a miss everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tollway.aio import cancel
from tollway.cache.embedders import EmbedError, ModelEmbedder
from tollway.cache.feed import FeedRecord, RedisFeed
from tollway.cache.learning import Learner
from tollway.cache.semantic import SemanticMatcher, WordLlamaEmbedder
from tollway.cache.worker import BatchWorker

if TYPE_CHECKING:
    from tollway.cache.semantic.matcher import Vector
    from tollway.config.model import SemanticCacheConfig
    from tollway.observe.metrics import Metrics

log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 1e-4
CATCH_UP_S = 30.0  # longest a starting replica waits to read the shared index


@dataclass(slots=True)
class Stored:
    partition: str
    text: str
    body_key: str
    expires: float  # epoch seconds


@dataclass(slots=True)
class Lookup:
    outcome: str  # hit | miss | timeout | busy | error
    body_key: str = ""
    key: int = 0
    similarity: float = 0.0
    vector: Vector | None = None  # embedded once: stored under on a miss
    rejected: list[str] = field(default_factory=list)  # guard reasons, "<rule>: <detail>"


class _Sized:
    """Stands in for a model embedder inside the matcher: only its width and name are used
    (vectors are computed asynchronously and handed to the matcher)."""

    def __init__(self, dim: int, name: str) -> None:
        self.dim = dim
        self.name = name

    def embed(self, texts: list[str]) -> Any:
        raise EmbedError("a model embedder embeds asynchronously")


class SemanticCache:
    """One per process: it outlives config reloads, like the State."""

    def __init__(self, cfg: SemanticCacheConfig, metrics: Metrics,
                 model_embedder: ModelEmbedder | None = None,
                 feed: RedisFeed | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.feed = feed
        self._model_embedder = model_embedder
        self._local = WordLlamaEmbedder() if model_embedder is None else None
        self.model = self._local.name if self._local else model_embedder.name  # type: ignore[union-attr]
        self._matcher: SemanticMatcher | None = None
        # Candidates from this similarity on: served at a fixed threshold, or decided by
        # what the cache learned (learning.py) above the floor.
        self.floor = cfg.threshold if cfg.threshold is not None else cfg.min_similarity
        if self._local is not None:
            self._matcher = SemanticMatcher(self._local, self.floor,
                                            max_vectors=cfg.max_vectors, guards=cfg.guarded)
            self.model = self._matcher.model
        self.learner = Learner(cfg, metrics)
        self.learner.embed_pair = self._embed_pair
        self._origin = random.getrandbits(63)  # tells our own verdicts in the feed
        if feed is not None:
            self.learner.publish = self._publish_verdict
            feed.on_verdict = self._feed_verdict
        self._entries: dict[int, Stored] = {}
        self._worker = BatchWorker(self._handle)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def size(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        # A thread waiting for the GIL only forces a switch if the holder kept it for a whole
        # switch interval; the event loop lets go at every poll (every few hundred µs under
        # load), which restarts that wait, so with the default 5 ms the cache's thread can
        # starve for seconds. At 100 µs it gets in within a poll; the interval costs nothing
        # while no other thread wants the GIL. Measured: an idle job's round trip under a
        # busy loop went from 1.5 s to 0.5 ms (bench/results/semantic.md).
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self._local is not None:  # 0.1-0.3 s: at startup, not on the first request
            await self._run("call", self._local.load, ())
        if self.feed is not None:
            self._tasks.append(asyncio.create_task(self.feed.follow(self._apply)))
            # A new replica serves from the shared index from its first request on (bounded:
            # with Redis down it starts cold and fills in once Redis is back).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CATCH_UP_S):
                    await self.feed.settled.wait()
        self._tasks.append(asyncio.create_task(self._sweep_forever()))

    async def stop(self) -> None:
        await cancel(*self._tasks)
        if self._model_embedder is not None:
            await self._model_embedder.close()
        if self.feed is not None:
            await self.feed.close()
        self._worker.stop()

    # --- lookups -------------------------------------------------------------------------
    async def lookup(self, partition: str, text: str) -> Lookup:
        if self._worker.pending >= self.cfg.max_pending:
            return Lookup("busy")
        try:
            async with asyncio.timeout(self.cfg.timeout_ms / 1000):
                if self._model_embedder is None:
                    found: Lookup = await self._run("lookup", partition, text)
                    return found
                vector = await self._model_embedder.embed(text)
                self._ensure_matcher(vector)
                found = await self._run("search", partition, text, vector)
                return found
        except TimeoutError:
            return Lookup("timeout")
        except (EmbedError, RuntimeError):  # RuntimeError: stopped by a reload meanwhile
            return Lookup("error")

    def _search(self, partition: str, text: str, vector: Vector) -> Lookup:
        assert self._matcher is not None
        rejected: list[str] = []
        found = self._matcher.lookup(partition, text, self._text_of, vector=vector,
                                     on_reject=lambda _k, _s, why: rejected.append(why))
        if found is None:
            return Lookup("miss", vector=vector, rejected=rejected)
        key, score = found
        stored = self._entries.get(key)
        if stored is None:
            return Lookup("miss", vector=vector, rejected=rejected)
        return Lookup("hit", stored.body_key, key, score, vector, rejected)

    def _text_of(self, key: int) -> str | None:
        stored = self._entries.get(key)
        if stored is None:
            return None
        if stored.expires <= time.time():
            self._entries.pop(key, None)
            return None
        return stored.text

    def forget(self, partition: str, key: int) -> None:
        """The body is gone (expired, purged, evicted): so is the entry."""
        self._entries.pop(key, None)
        if self._matcher is not None:
            self._matcher.remove(partition, key)

    # --- storing -------------------------------------------------------------------------
    async def store(self, partition: str, text: str, vector: Vector | None, body_key: str,
                    ttl_s: float) -> None:
        """Index an answer whose body the caller has just stored under ``body_key``."""
        if vector is None:
            try:
                async with asyncio.timeout(max(1.0, self.cfg.timeout_ms / 1000 * 4)):
                    if self._model_embedder is None:
                        assert self._matcher is not None
                        vector = await self._run("embed", text)
                    else:
                        vector = await self._model_embedder.embed(text)
            except (TimeoutError, EmbedError, RuntimeError):
                return
        self._ensure_matcher(vector)
        record = FeedRecord(random.getrandbits(63), partition, text, body_key,
                            time.time() + ttl_s, self.model, vector)
        try:
            await self._add([record])
        except RuntimeError:  # stopped by a reload meanwhile
            return
        if self.feed is not None:
            await self.feed.publish(record)

    async def _apply(self, records: list[FeedRecord]) -> None:
        """Records from the shared stream: ours (already indexed) and other replicas'."""
        now = time.time()
        fresh = [r for r in records if r.model == self.model and r.expires > now
                 and r.key not in self._entries]
        if fresh:
            self._ensure_matcher(fresh[0].vector)
            await self._add(fresh)

    async def _add(self, records: list[FeedRecord]) -> None:
        matcher = self._matcher
        assert matcher is not None
        for r in records:
            self._entries[r.key] = Stored(r.partition, r.text, r.body_key, r.expires)

        def add() -> list[tuple[Any, int]]:
            evicted = []
            for r in records:
                if r.vector.shape[0] == matcher.index.dim:
                    evicted += matcher.add(r.partition, r.key, r.text, r.vector)
            return evicted

        for _, key in await self._run("call", add, ()):
            self._entries.pop(key, None)

    def _ensure_matcher(self, vector: Vector) -> None:
        if self._matcher is None:
            sized = _Sized(int(vector.shape[0]), self.model)
            self._matcher = SemanticMatcher(sized, self.floor,
                                            max_vectors=self.cfg.max_vectors,
                                            content_only=False, guards=self.cfg.guarded)

    # --- learning ------------------------------------------------------------------------
    async def _embed_pair(self, a: str, b: str) -> float:
        """Cosine of two answers' raw-text embeddings (the embedding judge)."""
        if self._model_embedder is not None:
            va, vb = (await self._model_embedder.embed(a), await self._model_embedder.embed(b))
        else:
            assert self._local is not None
            local = self._local
            rows = await self._run("call", lambda: local.embed([a, b]), ())
            va, vb = rows[0], rows[1]
        return float(va @ vb)

    async def _publish_verdict(self, verdict: dict[str, Any]) -> None:
        if self.feed is not None:
            await self.feed.publish_verdict({**verdict, "o": self._origin})

    def _feed_verdict(self, v: dict[str, Any]) -> None:
        if v.get("o") == self._origin:
            return  # ours: applied when it was noted
        try:
            self.learner.apply(str(v["model"]), int(v["key"]), float(v["s"]), bool(v["ok"]))
        except (KeyError, TypeError, ValueError):
            return

    def views(self, limit: int, judged_only: bool) -> list[dict[str, Any]]:
        """Entries with what was judged of them (never their text: it is a prompt)."""
        out = []
        now = time.time()
        for key, st in list(self._entries.items()):
            evidence = self.learner.view(key)
            if judged_only and evidence is None:
                continue
            scope, model, digest = [*st.partition.split("|"), "", ""][:3]
            out.append({"key": str(key), "scope": scope, "model": model,
                        "partition": digest[:12], "expires_in_s": round(st.expires - now, 1),
                        **(evidence or {"verdicts": [], "floor": 0.0})})
            if len(out) >= limit:
                break
        return out

    # --- expiry and purge ----------------------------------------------------------------
    def purge(self, scope: str, model: str) -> int:
        """Drop this replica's entries of a scope and model (both may be ``*``); the others
        find the bodies gone and drop theirs on their next hit."""
        pattern = f"{scope}|{model}|*"
        # list(): one C-level copy, so the cache thread's pops cannot change it underneath
        gone = [(k, s.partition) for k, s in list(self._entries.items())
                if fnmatch.fnmatchcase(s.partition, pattern)]
        for key, part in gone:
            self.forget(part, key)
        return len(gone)

    async def sweep(self) -> int:
        now = time.time()
        expired = [(k, s.partition) for k, s in list(self._entries.items())
                   if s.expires <= now]
        for key, _ in expired:
            self._entries.pop(key, None)
        if expired and self._matcher is not None:
            matcher = self._matcher
            await self._run("call", lambda: [matcher.remove(p, k) for k, p in expired], ())
        return len(expired)

    async def _sweep_forever(self) -> None:
        every = min(30.0, max(1.0, self.cfg.ttl_s / 4))
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except Exception:
                log.exception("semantic cache sweep failed")

    # --- the cache's thread ------------------------------------------------------------
    async def _run(self, kind: str, *args: Any) -> Any:
        """Queue work on the cache's thread. A caller that stops waiting (its deadline)
        cancels only its wait; the work still occupies the thread and counts as pending."""
        return await self._worker.run(kind, *args)

    def _handle(self, jobs: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[bool, Any]]:
        """On the thread: embed every waiting text in one call, then do each job."""
        out: list[tuple[bool, Any]] = []
        texts = [args[-1] for kind, args in jobs if kind in ("lookup", "embed")]
        rows = iter(())
        if texts:
            assert self._matcher is not None
            rows = iter(self._matcher.embed_many(texts))
        for kind, args in jobs:
            try:
                if kind == "lookup":
                    out.append((True, self._search(args[0], args[1], next(rows))))
                elif kind == "embed":
                    out.append((True, next(rows)))
                elif kind == "search":
                    out.append((True, self._search(*args)))
                else:
                    fn, fargs = args
                    out.append((True, fn(*fargs)))
            except Exception as exc:
                out.append((False, exc))
        return out
