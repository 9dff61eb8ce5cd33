"""The gateway's own model calls (the semantic cache's judge, the injection judge): one
OpenAI-compatible chat request to a model under `models:`, its spend recorded as the
gateway's (agent `tollway`), so what tollway itself costs shows up beside the agents."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from tollway.protocols.openai import CHAT
from tollway.state.records import StepRecord

if TYPE_CHECKING:
    from tollway.routing.table import ModelRoute
    from tollway.state.base import State

log = logging.getLogger("tollway.own_call")
SELF_AGENT = "tollway"


async def ask(route: ModelRoute, payload: dict[str, Any], timeout_s: float,
              ) -> dict[str, Any] | None:
    """The model's answer, or None when it failed, timed out or was not JSON."""
    dep = route.deployments[0]
    payload = {**payload, "model": dep.upstream_model}
    try:
        async with dep.provider.session.post(
                dep.provider.url(CHAT, dep.upstream_model), data=orjson.dumps(payload),
                headers=dep.provider.request_headers({}), timeout=timeout_s) as resp:
            body = await resp.read()
            if resp.status != 200:
                return None
        data = orjson.loads(body)
    except (TimeoutError, OSError, orjson.JSONDecodeError) as exc:
        log.warning("model %s did not answer the gateway: %s", route.name, exc)
        return None
    return data if isinstance(data, dict) else None


async def record_own(state: State | None, route: ModelRoute, usage: Any, started: float,
                     session: str) -> None:
    if state is None or not isinstance(usage, dict):
        return
    tin = int(usage.get("prompt_tokens") or 0)
    tout = int(usage.get("completion_tokens") or 0)
    step = StepRecord(
        request_id=f"own_{os.urandom(6).hex()}", time=started, agent=SELF_AGENT,
        team=SELF_AGENT, session=session, endpoint="chat", model=route.name,
        requested_model=route.name, provider=route.provider.name, status=200,
        input_tokens=tin, output_tokens=tout, usage_source="upstream",
        cost_usd=route.cost(tin, tout, 0, 0), latency_s=round(time.time() - started, 6))
    try:
        await state.ledger.record(step)
    except Exception:
        log.exception("could not record the spend of the gateway's own call to %s",
                      route.name)
