"""Policy: may this caller use this model, and may the model's answer call these tools.

The model check runs before anything is counted or reserved. The answer's tool calls are
only looked at for requests that offer tools from callers whose tools are restricted (by a
policy or by their key): the stage then asks to see the answer (see policy/model_calls.py
for what happens to a call the caller may not make). The stage is in the chain only when
some policy or key restricts models or tools.
"""

from __future__ import annotations

from tollway.errors import GatewayError
from tollway.exchange import Body, Chunk, Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.identity import Identity
from tollway.policy.model_calls import ModelToolCalls
from tollway.stages.base import Stage


class Policy(Stage):
    name = "policy"

    def __init__(self, identity: Identity, metrics: Metrics, model_tool_calls: str) -> None:
        self.identity = identity
        self.metrics = metrics
        self.tool_calls = ModelToolCalls(identity, metrics, model_tool_calls)

    async def on_request(self, ex: Exchange) -> None:
        t = ex.target
        assert t.route is not None
        try:
            self.identity.check_model(ex.caller, t.requested or t.route.name)
        except GatewayError:
            self.metrics.child(self.metrics.policy_denials, "model", ex.caller.agent).inc()
            raise
        if self.tool_calls.applies(ex):
            ex.hooks.append(self)

    def on_chunk(self, ex: Exchange, chunk: Chunk) -> None:
        self.tool_calls.chunk(ex, chunk.data)

    async def on_body(self, ex: Exchange, body: Body) -> None:
        if body.status == 200:
            self.tool_calls.whole(ex, body)
