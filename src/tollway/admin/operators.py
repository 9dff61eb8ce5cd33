"""Operators: who is at the admin API or the console, and what their role lets them do.

Operators are named in `operators:` with a hashed token and a role; `server.admin_key` is
one more, named "admin", with the admin role. A token is compared by its sha256 digest in
constant time; the token itself is never kept, logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway.config.model import Config

ROLES = ("viewer", "approver", "admin")
# What each action needs, at least. Reading anything needs a viewer.
NEEDS = {"read": "viewer", "approve": "approver", "admin": "admin"}


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: str

    def can(self, action: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(NEEDS[action])


def _digest(token: str) -> str:
    return token[7:] if token.startswith("sha256:") else hashlib.sha256(
        token.encode()).hexdigest()


class Operators:
    def __init__(self, by_digest: dict[str, Operator]) -> None:
        self._by_digest = by_digest

    @classmethod
    def from_config(cls, cfg: Config) -> Operators:
        found = {_digest(o.token): Operator(name, o.role) for name, o in cfg.operators.items()}
        if cfg.server.admin_key:
            found.setdefault(_digest(cfg.server.admin_key), Operator("admin", "admin"))
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def authenticate(self, presented: str) -> Operator | None:
        """The operator whose token this is, or None (compared in constant time)."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()
        found = None
        for known, op in self._by_digest.items():
            if hmac.compare_digest(digest, known):
                found = op
        return found
