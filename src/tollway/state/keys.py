"""Runtime virtual keys: created, rotated and revoked through the admin API while the gateway
runs, and shared by every replica through the State.

A key is a record under a short random id (``key_`` + 12 hex). Only the sha256 digest of
its secret is stored: the secret is shown once, when it is made. A rotation gives the same
record a new secret and keeps the old one valid for a grace period (the few most recent old
digests are kept, so that a rotated-out secret is told it was rotated rather than that it is
unknown). A revocation ends every secret of the record at once.

Replicas do not read the State per request: `version()` is a counter every write bumps, and
identity resolution (tollway.policy.keybook) reloads `snapshot()` when it changed.

This module holds the record, the pure rules of a rotation and a revocation, and the
interface; the backends implement it in tollway.state.memory.keys and
tollway.state.redis.keys, each with one atomic compare-and-set (`_swap`) that the rules
here are applied through.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECRET_PREFIX = "sk-tw-"
PREVIOUS_KEPT = 4  # rotated-out digests remembered per key (to say "rotated", not "unknown")


def new_secret() -> tuple[str, str]:
    """A fresh secret and its digest; the caller shows the secret once and stores the digest."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, digest_of(secret)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_id() -> str:
    return "key_" + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    agent: str
    digest: str  # sha256 hex of the current secret; never shown
    created: float
    expires: float | None = None  # epoch seconds; after it, 401 key_expired
    models: tuple[str, ...] | None = None  # globs; None: whatever the agent may use
    tools: tuple[str, ...] | None = None
    budget_usd_day: float | None = None  # a daily budget of this key's own
    rpm: int | None = None  # requests per minute of this key (replaces rate_limits.per_key)
    label: str = ""
    revoked: float | None = None  # when it was revoked
    rotated: float | None = None  # when its secret was last replaced
    # Rotated-out secrets: (digest, valid until), most recent first, at most PREVIOUS_KEPT.
    previous: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Everything, digests included: what the State stores."""
        d = dataclasses.asdict(self)
        d["previous"] = [list(p) for p in self.previous]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyRecord:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("models", "tools"):
            if fields.get(k) is not None:
                fields[k] = tuple(fields[k])
        fields["previous"] = tuple((str(p[0]), float(p[1])) for p in d.get("previous") or ())
        return cls(**fields)

    def view(self, now: float | None = None) -> dict[str, Any]:
        """What the admin API shows: no digest, old or new; the end of a grace period."""
        t = time.time() if now is None else now
        d = self.to_dict()
        del d["digest"], d["previous"]
        grace = [until for _, until in self.previous if until > t]
        d["grace_until"] = max(grace) if grace and self.revoked is None else None
        d["status"] = self.status(t)
        return d

    def status(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "active"


def revoke(rec: KeyRecord, now: float) -> KeyRecord:
    """Every secret of the key ends now; revoking twice keeps the first time."""
    if rec.revoked is not None:
        return rec
    return dataclasses.replace(rec, revoked=now)


def rotate(rec: KeyRecord, digest: str, grace_s: float, now: float) -> KeyRecord:
    """A new secret; the old one stays valid for grace_s (0: refused at once)."""
    if rec.revoked is not None:
        raise KeyRevoked(rec.id)
    previous = ((rec.digest, now + max(0.0, grace_s)),  # one grace at a time
                *((d, min(until, now)) for d, until in rec.previous))
    return dataclasses.replace(rec, digest=digest, rotated=now,
                               previous=previous[:PREVIOUS_KEPT])


class KeyRevoked(Exception):
    """A revoked key cannot be rotated: make a new one."""


class KeyExists(Exception):
    """create() was given an id already taken (ids are random: practically never)."""


Change = Callable[[KeyRecord], KeyRecord]


class KeyStore(abc.ABC):
    """Runtime keys in the State. Writes are atomic per key and bump `version()`."""

    @abc.abstractmethod
    async def create(self, rec: KeyRecord) -> None:
        """Store a new key; KeyExists if its id is taken."""

    @abc.abstractmethod
    async def get(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def snapshot(self) -> tuple[int, list[KeyRecord]]:
        """The version and every record, as of (at least) that version."""

    @abc.abstractmethod
    async def version(self) -> int:
        """A counter every write bumps: what replicas poll to learn of changes cheaply."""

    @abc.abstractmethod
    async def _swap(self, key_id: str, change: Change) -> KeyRecord | None:
        """Apply `change` to the stored record atomically (retrying if another writer got
        there first) and return the result; None if there is no such key."""

    async def list(self, agent: str | None = None) -> list[KeyRecord]:
        _, recs = await self.snapshot()
        return sorted((r for r in recs if agent is None or r.agent == agent),
                      key=lambda r: (r.created, r.id))

    async def revoke(self, key_id: str, now: float | None = None) -> KeyRecord | None:
        t = time.time() if now is None else now
        return await self._swap(key_id, lambda r: revoke(r, t))

    async def rotate(self, key_id: str, digest: str, grace_s: float = 0.0,
                     now: float | None = None) -> KeyRecord | None:
        """A new secret for the key (its digest given); KeyRevoked if it was revoked."""
        t = time.time() if now is None else now
        return await self._swap(key_id, lambda r: rotate(r, digest, grace_s, t))
