"""Who is calling: a virtual key -> agent and team, and what the key and the policies let it use.

A key may carry less capability than its agent (named models and tools, an expiry), and the
policies say which models and tools an agent or team may use; both are checked here, for
model calls by the policy stage and for tool calls by the tool gate.

Keys come from `agents:` (fixed at load) and, unless identity.runtime_keys is off, from the
key book (policy/keybook.py): keys made through the admin API, held in memory and refreshed
from the State, so a runtime key costs a dict lookup too. A revoked, rotated-out or expired
runtime key is a 401 whatever identity.unknown_keys says: it was a key, and it says why.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import hashlib
from collections.abc import Mapping

from tollway.config.model import Config, key_digest
from tollway.errors import GatewayError, bad_request
from tollway.exchange import ANONYMOUS, Caller
from tollway.policy.keybook import BookEntry, KeyBook


def denied(message: str) -> GatewayError:
    return GatewayError(403, "policy_denied", message)


class Identity:
    """Virtual keys to callers. Plain keys are hashed at load too: one lookup path, and no
    plain key kept in memory beyond the config object itself."""

    def __init__(self, cfg: Config, keys: KeyBook | None = None) -> None:
        self.keys = keys
        self.reject_unknown = cfg.identity.unknown_keys == "reject"
        self.trust_agent_header = cfg.identity.trust_agent_header
        self.max_tags = cfg.identity.max_tags
        self.policy = cfg.policy
        # digest -> the caller its key names (built once: most requests carry no tags)
        self.by_digest: dict[str, Caller] = {}
        self.teams: dict[str, str] = {}
        for agent, a in cfg.agents.items():
            self.teams[agent] = a.team
            for k in a.keys:
                if isinstance(k, str):
                    digest, limited = key_digest(k), None
                else:
                    digest = key_digest(k.key)
                    limited = k if (k.models is not None or k.tools is not None
                                    or k.expires is not None) else None
                self.by_digest[digest] = Caller(agent, a.team, digest[:12], limited)
        # Whether any model call can be refused by a key's limits or a policy.
        # (A runtime key may come with limits at any time.)
        self.restricts = self.policy.restricts or keys is not None or any(
            c.limits is not None and (c.limits.models is not None or c.limits.tools is not None)
            for c in self.by_digest.values())

    def resolve(self, h: Mapping[str, str], tags: bool = False) -> Caller:
        """The caller of a request with these headers; `tags`: read x-tollway-tags too."""
        key = h.get("x-api-key")
        if key is None:
            auth = h.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        # aiohttp keeps a header's bytes that are not UTF-8 as lone surrogates: hash the
        # bytes the client sent (such a key matches no agent, it does not fail).
        digest = (hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
                  if key else None)
        caller = self.by_digest.get(digest) if digest else None
        if caller is None and digest and self.keys is not None:
            entry = self.keys.lookup(digest)
            if entry is not None:
                caller = self._runtime(entry)
        if caller is None:
            if self.reject_unknown:
                raise GatewayError(401, "invalid_api_key",
                                   "missing or unknown API key: use a tollway virtual key "
                                   "(Authorization: Bearer <key> or x-api-key)")
            caller = ANONYMOUS
        else:
            limits = caller.limits
            if limits is not None and limits.expires is not None and (
                    limits.expires <= datetime.datetime.now(datetime.UTC)):
                raise GatewayError(401, "key_expired",
                                   f"this virtual key of agent {caller.agent!r} expired at "
                                   f"{limits.expires.isoformat()}")
        if self.trust_agent_header and (named := h.get("x-tollway-agent")):
            if named not in self.teams:
                raise bad_request(f"x-tollway-agent names an unknown agent {named!r}",
                                  code="unknown_agent")
            caller = dataclasses.replace(caller, agent=named, team=self.teams[named])
        if tags and self.max_tags and (raw := h.get("x-tollway-tags")):
            raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            labels = tuple(t.strip()[:64] for t in raw.split(",") if t.strip())[: self.max_tags]
            caller = dataclasses.replace(caller, tags=labels)
        return caller

    def _runtime(self, entry: BookEntry) -> Caller:
        """The caller of a runtime key's secret, or its 401 (revoked, rotated out, expired,
        or naming an agent the config no longer has)."""
        rec = entry.record
        now = datetime.datetime.now(datetime.UTC)
        if rec.revoked is not None:
            raise GatewayError(401, "key_revoked",
                               f"this virtual key ({rec.id} of agent {rec.agent!r}) was revoked "
                               f"at {_iso(rec.revoked)}")
        if entry.until is not None and entry.until <= now.timestamp():
            raise GatewayError(401, "key_revoked",
                               f"this secret of virtual key {rec.id} (agent {rec.agent!r}) was "
                               f"rotated out at {_iso(entry.until)}; use its new secret")
        if rec.expires is not None and rec.expires <= now.timestamp():
            raise GatewayError(401, "key_expired",
                               f"this virtual key ({rec.id} of agent {rec.agent!r}) expired at "
                               f"{_iso(rec.expires)}")
        team = self.teams.get(rec.agent)
        if team is None:
            raise GatewayError(401, "invalid_api_key",
                               f"this virtual key ({rec.id}) names agent {rec.agent!r}, which "
                               "is no longer in the config's agents:")
        return Caller(rec.agent, team, rec.id, entry.limits, quota=entry.quota)

    def check_model(self, caller: Caller, model: str) -> None:
        self._check(caller, "models", "use model", model)

    def check_tool(self, caller: Caller, tool: str) -> None:
        self._check(caller, "tools", "call tool", tool)

    def _check(self, caller: Caller, kind: str, verb: str, name: str) -> None:
        """The key's own limits first, then the policies."""
        allowed = getattr(caller.limits, kind) if caller.limits is not None else None
        if allowed is not None and not any(fnmatch.fnmatchcase(name, g) for g in allowed):
            raise denied(f"this virtual key may not {verb} {name!r} (allowed: "
                         f"{', '.join(allowed) or 'none'})")
        if self.policy.restricts:
            decide = self.policy.model if kind == "models" else self.policy.tool
            decision = decide(caller.agent, caller.team, name)
            if not decision.allowed:
                raise denied(decision.reason)

    def may_call(self, caller: Caller, tool: str) -> bool:
        try:
            self.check_tool(caller, tool)
        except GatewayError:
            return False
        return True

    def tools_restricted(self, caller: Caller) -> bool:
        """Whether any tool may be refused to this caller (so its model's calls are checked)."""
        limited = caller.limits is not None and caller.limits.tools is not None
        return limited or self.policy.restricts


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")
