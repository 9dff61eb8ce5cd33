"""Record every exchange: metrics, and one state call that settles the guard's reservations
and attributes the spend. It wraps the whole chain, so refusals and cut streams are
recorded too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tollway.exchange import Exchange, Usage
from tollway.observe.metrics import Metrics
from tollway.observe.otel import operation_for
from tollway.protocols import conversation
from tollway.stages.base import Stage
from tollway.state.base import State
from tollway.state.breakers import Transition
from tollway.state.guards import Settlement
from tollway.state.lineage import LineageWrite
from tollway.state.records import StepRecord

if TYPE_CHECKING:
    from tollway.config.observe import TraceConfig
    from tollway.observe.audit import Audit
    from tollway.state.wal import WriteAhead

log = logging.getLogger("tollway.account")


class Account(Stage):
    name = "account"

    def __init__(self, state: State, metrics: Metrics,
                 on_transitions: Callable[[list[Transition]], None] | None = None,
                 trace: TraceConfig | None = None, audit: Audit | None = None,
                 tracing: Any = None, wal: WriteAhead | None = None,
                 lineage_window_s: float | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self.on_transitions = on_transitions
        self.content_chars = trace.max_chars if trace is not None and trace.content else 0
        self.audit = audit
        self.tracing = tracing  # observe.otel.Tracing, when spans are exported
        self.wal = wal
        self.lineage_window_s = lineage_window_s  # None: lineage off

    async def on_request(self, ex: Exchange) -> None:
        if self.tracing is not None:
            ex.span = self.tracing.start(ex.request.headers, operation_for(ex.endpoint.name),
                                         int(ex.wall_start * 1e9))
        return None

    async def after(self, ex: Exchange) -> None:
        if ex.accounted:
            return
        ex.accounted = True
        ex.finished_at = time.perf_counter()
        total = ex.finished_at - ex.started
        self.metrics.observe(ex, total)
        if ex.span is not None and self.tracing is not None:
            self._finish_span(ex, total)
        settle = _settlement(ex)
        step = self._step(ex, total) if ex.run.session and ex.target.route is not None else None
        if step is None and settle is None:
            return
        if step is not None and self.audit is not None:
            self.audit.append("step", step.to_dict())
        try:
            transitions = await self.state.ledger.record(step, settle, self._lineage(ex))
        except Exception:
            log.exception("could not record spend of request %s", ex.request_id)
            return
        if transitions and self.on_transitions is not None:
            self.on_transitions(transitions)

    def _lineage(self, ex: Exchange) -> LineageWrite | None:
        """What this answer leaves for the next request of its run, and for hand-offs, to be
        found by: its tool-call ids and text, fingerprints of what it said, its Responses id."""
        out = ex.outcome
        if self.lineage_window_s is None or out.status != 200 or not ex.run.session:
            return None
        try:
            text = out.text() if out.text is not None else ""
        except Exception:  # a partial stream that can't be decoded: nothing to find it by
            text = ""
        answers = [conversation.call_key(c) for c in out.call_ids]
        if (key := conversation.text_key(text)) is not None:
            answers.append(key)
        said = [text] if text else []
        for name, args in out.call_args:  # the tool gateway finds the call by these
            answers += conversation.tool_keys(name, args)
            said += conversation.argument_texts(args)  # a task handed to a sub-agent
        if not answers and not out.response_id:
            return None
        return LineageWrite(ex.run.session, ex.caller.agent, answers,
                            conversation.fingerprints(said) if said else [],
                            out.response_id, ex.run.parent, self.lineage_window_s)

    def _finish_span(self, ex: Exchange, total: float) -> None:
        out, up, t = ex.outcome, ex.upstream, ex.target
        u = out.usage or Usage()
        route = t.route
        try:
            self.tracing.finish(
                ex.span,
                provider=up.kind or (route.provider.kind if route else ""),
                request_model=t.requested or (route.name if route else ""),
                response_model=(up.model or (route.upstream_model if route else ""))
                if out.status < 400 else "",
                input_tokens=u.total_input, output_tokens=u.output,
                session=ex.run.session, agent=ex.caller.agent, team=ex.caller.team,
                status=out.status, error_code=out.error_code, cost_usd=out.cost_usd,
                cache=ex.cache.served, rule=t.rule,
                end_ns=int((ex.wall_start + total) * 1e9), request_id=ex.request_id)
        except Exception:
            log.exception("could not end the span of request %s", ex.request_id)

    def _step(self, ex: Exchange, total: float) -> StepRecord:
        """The step, from the exchange's parts."""
        out, caller, t = ex.outcome, ex.caller, ex.target
        u = out.usage or Usage()
        route = t.route
        assert route is not None
        first = ex.upstream.first_token_at
        return StepRecord(
            request_id=ex.request_id, time=ex.wall_start, agent=caller.agent,
            team=caller.team, session=ex.run.session, endpoint=ex.endpoint.name,
            model=route.name, requested_model=t.requested, provider=route.provider.name,
            status=out.status, tags=caller.tags, rule=t.rule, cache=ex.cache.served,
            stream=ex.stream, error_code=out.error_code, input_tokens=u.input,
            output_tokens=u.output, cached_tokens=u.cached, cache_write_tokens=u.cache_write,
            prompt_tokens_counted=ex.prompt.known, usage_source=out.usage_source,
            cost_usd=out.cost_usd, latency_s=round(total, 6),
            ttft_s=round(first - ex.started, 6) if first else None,
            flags=tuple(ex.flags), guard=ex.guard.refused_by, tool_calls=tuple(out.tool_calls),
            parent=ex.run.parent,
            **(self._content(ex) if self.content_chars else {}))

    def _content(self, ex: Exchange) -> dict[str, str | None]:
        n = self.content_chars
        completion = None
        text = ex.outcome.text
        if text is not None:
            try:
                completion = text()[:n]
            except Exception:  # a partial stream that can't be decoded: no text, no failure
                completion = None
        return {"prompt": last_message_text(ex.body)[:n] or None, "completion": completion}


class WriteAheadAccount(Account):
    """Account, with each step written ahead to the worker's file before its answer is
    released (the last response hook runs before a non-streamed answer is sent), so a
    worker killed outright loses no spend (state/wal.py)."""

    async def on_response(self, ex: Exchange) -> None:
        assert self.wal is not None
        if ex.run.session and ex.target.route is not None:
            step = self._step(ex, time.perf_counter() - ex.started)
            if step.cost_usd or step.input_tokens or step.output_tokens:
                self.wal.append(step, _settlement(ex))


def _settlement(ex: Exchange) -> Settlement | None:
    settle = ex.guard.settlement
    if ex.upstream.breaker_outcomes:
        settle = settle or Settlement(request_id=ex.request_id)
        settle.breakers = list(ex.upstream.breaker_outcomes)
    return settle


def last_message_text(body: dict[str, Any]) -> str:
    """The step's own input: the last message (or the prompt / input string)."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
    else:
        content = body.get("prompt", body.get("input"))
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and "text" in p)
    return ""
