"""Who is calling: virtual key -> agent and team; the session; tags; what the key may use.

A key may carry less capability than its agent (named models and tools, an expiry), and the
policies say which models an agent or team may use; both are checked here for models and by
the tool gate for tools.
"""

from __future__ import annotations

import hashlib

from tollway.config.model import Config
from tollway.errors import GatewayError, bad_request
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.identity import Identity
from tollway.stages.base import Stage


class Identify(Stage):
    name = "identify"

    def __init__(self, cfg: Config, identity: Identity | None = None,
                 metrics: Metrics | None = None) -> None:
        self.identity = identity or Identity(cfg)
        self.metrics = metrics
        from tollway.policy.model_calls import ModelToolCalls

        self.tool_calls = ModelToolCalls(self.identity, metrics, cfg.policy.model_tool_calls) \
            if metrics is not None else None
        self.trust_session_header = cfg.identity.trust_session_header
        self.max_tags = cfg.identity.max_tags

    async def on_request(self, ex: Exchange) -> None:
        h = ex.request.headers
        who = self.identity.resolve(h, tags=True)
        ex.agent, ex.team, ex.key_id = who.agent, who.team, who.key_id
        ex.who = who
        if ex.route is not None:
            try:
                self.identity.check_model(who, ex.requested_model or ex.route.name)
            except GatewayError:
                if self.metrics is not None:
                    self.metrics.child(self.metrics.policy_denials, "model", who.agent).inc()
                raise
        if self.tool_calls is not None and self.tool_calls.applies(ex):
            ex.tool_policy = self.tool_calls
        session = h.get("x-tollway-session") if self.trust_session_header else None
        if session:
            if len(session) > 128:
                raise bad_request("x-tollway-session is longer than 128 characters")
            ex.session = session
        else:
            seed = ex.endpoint.dialect.session_seed(ex.endpoint, ex.body)
            digest = hashlib.blake2b(ex.agent.encode() + b"\0" + seed, digest_size=8)
            ex.session = "s-" + digest.hexdigest()
        parent = h.get("x-tollway-parent-session")
        if parent:
            ex.parent_session = parent[:128]
        ex.tags = who.tags
