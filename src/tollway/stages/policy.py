"""Policy: may this caller use this model, and what of the tools the model's answer calls.

The model check runs before anything is counted or reserved. The answer's tool calls are
only looked at for requests that offer tools, so a request without tools pays nothing per
chunk: calls its caller may not make (by a policy or by its key: policy/model_calls.py), and
calls to risk-zone tools, red held for approval and yellow flagged (policy/model_zones.py).
Each such request gets a hook of its own (`_AnswerPolicy`), which knows what applies to it
and which calls of its stream were already decided. The stage is in the chain only when some
policy or key restricts models or tools, or the policies have zones.
"""

from __future__ import annotations

from collections.abc import Awaitable

from tollway.errors import GatewayError
from tollway.exchange import Body, Chunk, Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.approvals import ApprovalDesk
from tollway.policy.identity import Identity
from tollway.policy.model_calls import ModelToolCalls
from tollway.policy.model_zones import AnswerZones, ModelZones
from tollway.stages.base import Stage


class Policy(Stage):
    name = "policy"

    def __init__(self, identity: Identity, metrics: Metrics, model_tool_calls: str,
                 desk: ApprovalDesk) -> None:
        self.identity = identity
        self.metrics = metrics
        self.tool_calls = ModelToolCalls(identity, metrics, model_tool_calls)
        self.zones = ModelZones(identity.policy, metrics, desk) if identity.policy.zones \
            else None

    async def on_request(self, ex: Exchange) -> None:
        t = ex.target
        assert t.route is not None
        try:
            self.identity.check_model(ex.caller, t.requested or t.route.name)
        except GatewayError:
            self.metrics.child(self.metrics.policy_denials, "model", ex.caller.agent).inc()
            raise
        if not ex.body.get("tools"):
            return
        checks = self.tool_calls if self.tool_calls.applies(ex) else None
        if checks is not None or self.zones is not None:
            ex.hooks.append(_AnswerPolicy(
                checks, self.zones.answer() if self.zones is not None else None))


class _AnswerPolicy:
    """The policy stage's response hook for one answer: the calls its caller may not make
    first (blocked or flagged), then the risk zones of the rest."""

    __slots__ = ("checks", "zones")

    def __init__(self, checks: ModelToolCalls | None, zones: AnswerZones | None) -> None:
        self.checks = checks
        self.zones = zones

    def on_chunk(self, ex: Exchange, chunk: Chunk) -> Awaitable[None] | None:
        if self.checks is not None:
            self.checks.chunk(ex, chunk.data)
        if self.zones is not None:
            return self.zones.chunk(ex, chunk)
        return None

    async def on_body(self, ex: Exchange, body: Body) -> None:
        if body.status != 200:
            return
        if self.checks is not None:
            self.checks.whole(ex, body)
        if self.zones is not None:
            await self.zones.whole(ex, body)
