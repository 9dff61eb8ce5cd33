"""The semantic cache's embedders as the gateway calls them.

The local one (WordLlama, weights from the wheel) runs in the cache's executor thread. A model
embedder calls an OpenAI-compatible ``/v1/embeddings`` (OpenAI, a local TEI or Ollama) through
a configured provider: texts arriving within ``batch_ms`` of each other share one call, and
what the calls cost is recorded as the gateway's own spend (agent ``tollway``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import orjson

from tollway.cache.semantic import normalize_rows
from tollway.protocols.openai import EMBEDDINGS
from tollway.providers.own_call import SELF_AGENT
from tollway.state.records import StepRecord

if TYPE_CHECKING:
    from tollway.cache.semantic.matcher import Vector
    from tollway.config.model import SemanticCacheConfig
    from tollway.providers.registry import ModelRoute
    from tollway.state.base import State

log = logging.getLogger(__name__)



class EmbedError(Exception):
    """The embedder could not answer: the lookup is a miss."""


class ModelEmbedder:
    """Batched calls to an embeddings model under `models:`; vectors come back unit-length."""

    def __init__(self, cfg: SemanticCacheConfig, resolve: Callable[[], ModelRoute | None],
                 state: State) -> None:
        self.model = cfg.embedder
        self.dim = cfg.dims
        self.name = f"model:{cfg.embedder}" + (f"/{cfg.dims}" if cfg.dims else "")
        self._resolve = resolve
        self._state = state
        self._batch_size = cfg.batch_size
        self._batch_s = cfg.batch_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=max(1.0, 20 * cfg.timeout_ms / 1000))
        self._queue: list[tuple[str, asyncio.Future[Vector]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def embed(self, text: str) -> Vector:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Vector] = loop.create_future()
        self._queue.append((text, fut))
        if len(self._queue) >= self._batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._batch_s, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.create_task(self._call(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[tuple[str, asyncio.Future[Vector]]]) -> None:
        try:
            rows = await self._request([t for t, _ in batch])
        except Exception as exc:  # every waiter gets a miss, none a failure
            log.warning("semantic cache embedder %s failed: %s", self.model, exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(EmbedError(str(exc)))
            return
        for (_, fut), row in zip(batch, rows, strict=True):
            if not fut.done():
                fut.set_result(row)

    async def _request(self, texts: list[str]) -> Any:
        route = self._resolve()
        if route is None:
            raise EmbedError(f"model {self.model!r} is not configured")
        dep = route.deployments[0]
        payload: dict[str, Any] = {"model": dep.upstream_model, "input": texts,
                                   "encoding_format": "float"}
        if self.dim:
            payload["dimensions"] = self.dim
        headers = dep.provider.request_headers({})
        started = time.time()
        url = dep.provider.url(EMBEDDINGS, dep.upstream_model)
        async with dep.provider.session.post(url, data=orjson.dumps(payload), headers=headers,
                                             timeout=self._timeout) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise EmbedError(f"HTTP {resp.status} from {dep.target}")
        data = orjson.loads(body)
        items = sorted(data["data"], key=lambda d: d["index"])
        if len(items) != len(texts):
            raise EmbedError(f"{len(items)} embeddings for {len(texts)} texts")
        matrix = np.asarray([d["embedding"] for d in items], dtype=np.float32)
        if self.dim is None:
            self.dim = matrix.shape[1]
        elif matrix.shape[1] != self.dim:
            raise EmbedError(f"{matrix.shape[1]} dimensions, configured {self.dim}")
        await self._record(route, data.get("usage") or {}, started)
        return normalize_rows(matrix)

    async def _record(self, route: ModelRoute, usage: dict[str, Any], started: float) -> None:
        tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
        cost = route.cost(tokens, 0, 0, 0)
        step = StepRecord(
            request_id=f"emb_{os.urandom(6).hex()}", time=started, agent=SELF_AGENT,
            team=SELF_AGENT, session="semantic-cache", endpoint="embeddings", model=route.name,
            requested_model=route.name, provider=route.provider.name, status=200,
            input_tokens=tokens, usage_source="upstream", cost_usd=cost,
            latency_s=round(time.time() - started, 6))
        try:
            await self._state.ledger.record(step)
        except Exception:
            log.exception("could not record the semantic cache's embedding spend")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
