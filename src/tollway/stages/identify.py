"""Who is calling: virtual key -> agent and team; the session; tags."""

from __future__ import annotations

import hashlib

from tollway.config.model import Config, key_digest
from tollway.errors import GatewayError, bad_request
from tollway.exchange import Exchange
from tollway.stages.base import Stage

ANONYMOUS = "anonymous"


class Identify(Stage):
    name = "identify"

    def __init__(self, cfg: Config) -> None:
        self.reject_unknown = cfg.identity.unknown_keys == "reject"
        self.trust_agent_header = cfg.identity.trust_agent_header
        self.trust_session_header = cfg.identity.trust_session_header
        self.max_tags = cfg.identity.max_tags
        # Plain keys are hashed at load too: one lookup path, and no plain key kept in memory
        # beyond the config object itself.
        self.by_digest: dict[str, tuple[str, str]] = {}
        self.teams: dict[str, str] = {}
        for agent, a in cfg.agents.items():
            self.teams[agent] = a.team
            for k in a.keys:
                self.by_digest[key_digest(k)] = (agent, a.team)

    async def on_request(self, ex: Exchange) -> None:
        h = ex.request.headers
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
            found = (ANONYMOUS, "default")
        else:
            ex.key_id = digest[:12]  # type: ignore[index]
        ex.agent, ex.team = found
        if self.trust_agent_header and (named := h.get("x-tollway-agent")):
            if named not in self.teams:
                raise bad_request(f"x-tollway-agent names an unknown agent {named!r}",
                                  code="unknown_agent")
            ex.agent, ex.team = named, self.teams[named]
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
