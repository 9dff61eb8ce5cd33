"""What every section of the gateway.yaml model shares: the strict base model and the check
of a configured key (server.admin_key and agents' keys are written the same way)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_key(k: str) -> None:
    """A key is plain, or "sha256:" and the 64 hex digits of its digest; never empty."""
    if k.startswith("sha256:") and not _HEX64.match(k[7:]):
        raise ValueError("a hashed key must be 'sha256:' followed by 64 lower-case hex digits")
    if not k:
        raise ValueError("a key must not be empty")
