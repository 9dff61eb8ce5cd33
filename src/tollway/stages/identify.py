"""Who is calling: virtual key -> agent and team; the session; tags; what the key may use.

A key may carry less capability than its agent (named models and tools, an expiry), and the
policies say which models an agent or team may use; both are checked here for models and by
the tool gate for tools.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from tollway.config.model import Config, key_digest
from tollway.config.tools import KeyConfig
from tollway.errors import GatewayError, bad_request
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.stages.base import Stage

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Who:
    agent: str
    team: str
    key_id: str | None = None  # a short digest of the virtual key, never the key
    limits: KeyConfig | None = None  # the key's own models/tools/expiry, if it has any


def denied(message: str) -> GatewayError:
    return GatewayError(403, "policy_denied", message)


class Identity:
    """Virtual keys to agents. Plain keys are hashed at load too: one lookup path, and no
    plain key kept in memory beyond the config object itself."""

    def __init__(self, cfg: Config) -> None:
        self.reject_unknown = cfg.identity.unknown_keys == "reject"
        self.trust_agent_header = cfg.identity.trust_agent_header
        self.policy = cfg.policy
        self.by_digest: dict[str, tuple[str, str, KeyConfig | None]] = {}
        self.teams: dict[str, str] = {}
        for agent, a in cfg.agents.items():
            self.teams[agent] = a.team
            for k in a.keys:
                if isinstance(k, str):
                    self.by_digest[key_digest(k)] = (agent, a.team, None)
                else:
                    limited = k if (k.models is not None or k.tools is not None
                                    or k.expires is not None) else None
                    self.by_digest[key_digest(k.key)] = (agent, a.team, limited)

    def resolve(self, h: Mapping[str, str]) -> Who:
        key = h.get("x-api-key")
        if key is None:
            auth = h.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        digest = hashlib.sha256(key.encode()).hexdigest() if key else None
        found = self.by_digest.get(digest) if digest else None
        if found is None:
            if self.reject_unknown:
                raise GatewayError(401, "invalid_api_key",
                                   "missing or unknown API key: use a tollway virtual key "
                                   "(Authorization: Bearer <key> or x-api-key)")
            who = Who(ANONYMOUS, "default")
        else:
            agent, team, limits = found
            if limits is not None and limits.expires is not None and (
                    limits.expires <= datetime.datetime.now(datetime.UTC)):
                raise GatewayError(401, "key_expired",
                                   f"this virtual key of agent {agent!r} expired at "
                                   f"{limits.expires.isoformat()}")
            who = Who(agent, team, digest[:12], limits)  # type: ignore[index]
        if self.trust_agent_header and (named := h.get("x-tollway-agent")):
            if named not in self.teams:
                raise bad_request(f"x-tollway-agent names an unknown agent {named!r}",
                                  code="unknown_agent")
            who = Who(named, self.teams[named], who.key_id, who.limits)
        return who

    def check_model(self, who: Who, model: str) -> None:
        self._check(who, "models", "use model", model)

    def check_tool(self, who: Who, tool: str) -> None:
        self._check(who, "tools", "call tool", tool)

    def _check(self, who: Who, kind: str, verb: str, name: str) -> None:
        """The key's own limits first, then the policies."""
        allowed = getattr(who.limits, kind) if who.limits is not None else None
        if allowed is not None and not any(fnmatch.fnmatchcase(name, g) for g in allowed):
            raise denied(f"this virtual key may not {verb} {name!r} (allowed: "
                         f"{', '.join(allowed) or 'none'})")
        if self.policy.restricts:
            decide = self.policy.model if kind == "models" else self.policy.tool
            decision = decide(who.agent, who.team, name)
            if not decision.allowed:
                raise denied(decision.reason)

    def may_call(self, who: Who, tool: str) -> bool:
        try:
            self.check_tool(who, tool)
        except GatewayError:
            return False
        return True


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
        who = self.identity.resolve(h)
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
        tags = h.get("x-tollway-tags")
        if tags and self.max_tags:
            ex.tags = tuple(t.strip()[:64] for t in tags.split(",") if t.strip())[: self.max_tags]
