"""Guardrails on model traffic: the prompt (and the tool results inside it) before it goes
upstream, the answer on its way back, streamed or not (guardrails/stream.py).

The stage is in the chain only when some policy has guardrail rules for prompts, answers or
tool results; a request none of them applies to costs one memoised lookup. A redacted
prompt is what goes upstream, what the cache keys on and what is metered; with `restore`,
the answer gets the original values back in place of their placeholders.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson

from tollway.errors import GatewayError
from tollway.exchange import Body, Chunk, Exchange
from tollway.guardrails.act import Context, Enforcer
from tollway.guardrails.redact import Redactor
from tollway.guardrails.slots import answer_slots, request_slots
from tollway.guardrails.stream import Holdback
from tollway.policy.guardrails import Applicable
from tollway.stages.base import Stage


class Guardrail(Stage):
    name = "guardrail"

    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer
        self.g = enforcer.g

    def _context(self, ex: Exchange, where: str) -> Context:
        return Context(ex.caller, ex.run.session, ex.request_id, where, ex.model_name,
                       ex.flags)

    async def on_request(self, ex: Exchange) -> None:
        caller, g = ex.caller, self.g
        model = ex.target.requested or (ex.target.route.name if ex.target.route else "")
        prompt = g.applicable("prompt", caller.agent, caller.team, model)
        results = g.applicable("tool_results", caller.agent, caller.team, model)
        answer = g.applicable("answer", caller.agent, caller.team, model)
        redactor = Redactor()
        if prompt or results:
            slots = request_slots(ex.body)
            verdict = await g.check_judged(slots, {"prompt": prompt, "tool_results": results})
            taken = await self.enforcer.enforce(verdict, slots, redactor,
                                                self._context(ex, "prompt"))
            if taken is not None:
                _header(ex, verdict.summary())
            if redactor.placeholders:  # what is keyed, fingerprinted and sent upstream
                ex.raw = orjson.dumps(ex.body)
        if answer or redactor.restorable:
            ex.hooks.append(_AnswerGuard(self, answer, redactor))


class _AnswerGuard:
    __slots__ = ("answer", "hold", "redactor", "seen", "stage")

    def __init__(self, stage: Guardrail, answer: Applicable, redactor: Redactor) -> None:
        self.stage = stage
        self.answer = answer
        self.redactor = redactor
        self.hold: Holdback | None = None
        self.seen: set[tuple[int, str, str]] = set()

    def _new(self, hb: Holdback, h: Any) -> bool:
        key = (hb.released + h.finding.start, h.finding.entity, h.rule.name)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    async def on_body(self, ex: Exchange, body: Body) -> None:
        if body.status >= 300:
            return
        parsed = body.json()
        if parsed is None:
            return
        slots = answer_slots(parsed)
        if self.answer:
            verdict = await self.stage.g.check_judged(slots, {"answer": self.answer})
            try:
                taken = await self.stage.enforcer.enforce(
                    verdict, slots, self.redactor, self.stage._context(ex, "answer"))
            except GatewayError as err:
                body.status = err.status
                body.payload = ex.endpoint.dialect.error_body(err)
                body._parsed = None
                ex.outcome.error_code = err.code
                return
            if taken is not None:
                _header(ex, verdict.summary())
            changed = any(h.rule.action == "redact" for h in verdict.hits)
        else:
            changed = False
        if self.redactor.restorable:
            for slot in slots:
                slot.set(self.redactor.restore(slot.text))
            changed = changed or bool(slots)
        if changed:
            body.replace(parsed)

    def on_chunk(self, ex: Exchange, chunk: Chunk) -> Awaitable[None] | None:
        hb = self.hold
        if hb is None:
            hb = self.hold = Holdback(ex.endpoint.name, self.stage.g.cfg.stream_window)
        hb.add(chunk.data)
        done = chunk.observer is None or chunk.observer.finished
        if not hb.due(done):
            chunk.data = b""  # held until there is enough new text to look at
            return None
        if self.answer:
            slot = hb.slot()
            verdict = self.stage.g.check([slot], {"answer": self.answer})
            # the held text is scanned again as it grows: act on each finding once
            verdict.hits = [h for h in verdict.hits if self._new(hb, h)]
            ctx = self.stage._context(ex, "answer")
            if self.stage.enforcer.act(verdict, [slot], self.redactor, ctx) == "hold":
                return self._held(chunk, verdict, ctx, done)
        chunk.data = self._release(hb, done)
        return None

    def _release(self, hb: Holdback, done: bool) -> bytes:
        r = self.redactor
        return hb.release(done, r.restore if r.restorable else None, r.answer_values)

    async def _held(self, chunk: Chunk, verdict: Any, ctx: Context, done: bool) -> None:
        """A hold in a stream: what was already clear of the window went out, nothing more
        does until the approval is decided (a rejection ends the stream)."""
        assert self.hold is not None
        chunk.data = b""
        await self.stage.enforcer.hold(verdict, ctx)
        chunk.data = self._release(self.hold, done)


def _header(ex: Exchange, summary: str) -> None:
    if ex.stream:
        return  # a stream's headers are gone by the answer; the step has the flags
    prev = ex.response_headers.get("x-tollway-guardrail")
    ex.response_headers["x-tollway-guardrail"] = f"{prev}, {summary}" if prev else summary
