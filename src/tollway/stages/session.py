"""Session: which run of its agent this request is a step of.

`x-tollway-session` names it when the config trusts the header. Otherwise it is derived
from the conversation: the agent and the conversation's opening (system prompt and first
user turn), so every step of one conversation lands in one session without any header.
`x-tollway-parent-session` names the session that handed this one its task.
"""

from __future__ import annotations

import hashlib

from tollway.config.model import Config
from tollway.errors import bad_request
from tollway.exchange import Exchange
from tollway.stages.base import Stage


class Session(Stage):
    name = "session"

    def __init__(self, cfg: Config) -> None:
        self.trust_header = cfg.identity.trust_session_header

    async def on_request(self, ex: Exchange) -> None:
        h = ex.request.headers
        run = ex.run
        named = h.get("x-tollway-session") if self.trust_header else None
        if named:
            if len(named) > 128:
                raise bad_request("x-tollway-session is longer than 128 characters")
            run.session = _text(named)
        else:
            seed = ex.endpoint.dialect.session_seed(ex.endpoint, ex.body)
            digest = hashlib.blake2b(ex.caller.agent.encode() + b"\0" + seed, digest_size=8)
            run.session = "s-" + digest.hexdigest()
        parent = h.get("x-tollway-parent-session")
        if parent:
            run.parent = _text(parent[:128])


def _text(value: str) -> str:
    """A header value as text: aiohttp keeps bytes that are not UTF-8 as lone surrogates,
    which no JSON writer (traces, the ledger) takes; they become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
