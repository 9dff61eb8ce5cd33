"""Session: which run of its agent this request is a step of.

`x-tollway-session` names it when the config trusts the header. Otherwise it is derived
from the conversation (identity.lineage, on by default): the stage reads what lineage needs
(the last answer the history carries, an opening's digest, `previous_response_id`, the
fingerprints of the new content) and the guard's admission resolves it in the same State
round trip as its checks (state/lineage.py has the rules); with no guard in the chain, this
stage asks the State itself. Until then, and with lineage off, the session is the one the
conversation's opening gives (the agent, the system prompt and the first user turn).
`x-tollway-parent-session` names the session that handed this one its task.
"""

from __future__ import annotations

import hashlib

from tollway.config.model import Config
from tollway.errors import bad_request
from tollway.exchange import Exchange
from tollway.protocols import conversation
from tollway.stages.base import Stage
from tollway.state.base import State, StateUnavailable
from tollway.state.guards import Admission
from tollway.state.lineage import LineageQuery


class Session(Stage):
    name = "session"

    def __init__(self, cfg: Config, state: State, resolve: bool) -> None:
        ident = cfg.identity
        self.trust_header = ident.trust_session_header
        self.lineage = ident.lineage
        self.window_s = ident.lineage_window_s
        self.state = state
        self.resolve = resolve and ident.lineage  # no guard in the chain to ask for it

    async def on_request(self, ex: Exchange) -> None:
        h = ex.request.headers
        run = ex.run
        named = h.get("x-tollway-session") if self.trust_header else None
        if named:
            if len(named) > 128:
                raise bad_request("x-tollway-session is longer than 128 characters")
            named = _text(named)
        parent = h.get("x-tollway-parent-session")
        run.parent = _text(parent[:128]) if parent else None
        agent = ex.caller.agent
        seed = ex.endpoint.dialect.session_seed(ex.endpoint, ex.body)
        opened = "s-" + hashlib.blake2b(agent.encode() + b"\0" + seed, digest_size=8).hexdigest()
        run.session = named or opened
        if not self.lineage:
            return
        conv = conversation.read(ex.endpoint.name, ex.body)
        run.query = LineageQuery(
            agent, opened, conv.last_answer,
            conversation.digest(conv.opening) if conv.opening is not None else None,
            conv.previous_response, conversation.fingerprints(conv.new_text), named,
            run.parent, self.window_s)
        if self.resolve:
            try:
                v = await self.state.guards.admit(Admission(run.session, agent,
                                                            lineage=run.query))
            except StateUnavailable:
                return  # the opening's session, unlinked
            if v.lineage is not None:
                ex.follow(v.lineage)


def _text(value: str) -> str:
    """A header value as text: aiohttp keeps bytes that are not UTF-8 as lone surrogates,
    which no JSON writer (traces, the ledger) takes; they become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
