"""Backpressure: a cap on concurrent upstream requests per provider and per model.

Past the cap a bounded number of requests wait (first come, first served); past the queue,
or after waiting too long, the answer is 503 with Retry-After. Nothing piles up unbounded.
"""

from __future__ import annotations

import time

from tollway.errors import GatewayError
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.routing.concurrency import Limiter
from tollway.stages.base import Stage


class Backpressure(Stage):
    name = "backpressure"

    def __init__(self, metrics: Metrics, providers: dict[str, Limiter],
                 models: dict[str, Limiter]) -> None:
        self.metrics = metrics
        self.providers = providers
        self.models = models

    async def on_request(self, ex: Exchange) -> None:
        route = ex.target.route
        assert route is not None
        held: list[Limiter] = []
        ex.held_slots = held
        for limiter in (self.models.get(route.name), self.providers.get(route.provider.name)):
            if limiter is None:
                continue
            start = time.perf_counter()
            try:
                await limiter.acquire()
            except GatewayError:
                self.metrics.backpressure_rejections.labels(limiter.target).inc()
                raise
            held.append(limiter)
            self.metrics.queue_wait.labels(limiter.target).observe(time.perf_counter() - start)

    async def on_response(self, ex: Exchange) -> None:
        for limiter in ex.held_slots:
            limiter.release()
        ex.held_slots = []
