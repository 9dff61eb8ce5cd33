"""Session lineage: which run a request continues, and which session handed it its task.

What the session stage asks (`LineageQuery`) travels in the guard's admission, so the run is
found in the same State round trip as the checks; what an answer leaves behind
(`LineageWrite`) travels in the ledger's record. Both backends apply the same rules
(`resolve` below for memory; admit.lua and record.lua for Redis):

1. `x-tollway-session` names the session: no lookup.
2. A Responses call naming `previous_response_id` continues that response's session.
3. A request whose last assistant turn is an answer this agent got (its tool-call ids, or
   its text) continues that answer's session: the same run, however the history grew.
4. A request with assistant turns the gateway does not know (its record expired, a history
   from elsewhere) gets the run its opening would have (`seed`): the old derivation.
5. An opening (no assistant turn yet) starts a run. Sent again before its run progressed (no
   request continued it), it is the same run: a repeat. Sent again after that, it is a new
   run (`seed-2`, `seed-3`...): batch runs of one task are separate sessions.

A request whose new content carries another session's fingerprints (its answer's
sentences, its tool-call arguments) is linked to it: that session is its parent, and the
two share a chain root, which the ping-pong detector counts hand-offs on. A fingerprint
keeps the (at most two) sessions whose answers carried it: one that said it and one that
quoted it back; a third makes it boilerplate ("Let me know if you need anything else"),
which links nothing. What is kept
lives `window_s` and holds digests only, never text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway.state.guards import Admission

HOW = ("header", "response", "continued", "unknown", "opened", "repeated", "restarted")


@dataclass(slots=True)
class LineageQuery:
    agent: str
    seed: str  # the session of a first opening, and of an unknown continuation
    answers: list[str] = field(default_factory=list)  # keys of the last assistant turn
    opening: str | None = None  # digest of an opening request
    response: str | None = None  # previous_response_id
    handoff: list[str] = field(default_factory=list)  # fingerprints of the new content
    named: str | None = None  # x-tollway-session: the session, as given
    parent: str | None = None  # x-tollway-parent-session
    window_s: float = 3600.0


@dataclass(slots=True)
class Lineage:
    """The answer: the session, the session that handed it the task, the chain's root."""

    session: str
    parent: str | None = None
    root: str = ""
    how: str = "opened"


@dataclass(slots=True)
class LineageWrite:
    """What an answer leaves for the requests after it to be found by."""

    session: str
    agent: str
    answers: list[str] = field(default_factory=list)  # the keys the next request echoes
    handoff: list[str] = field(default_factory=list)  # fingerprints of what it said
    response: str | None = None  # its Responses id
    parent: str | None = None
    window_s: float = 3600.0


def follow(adm: Admission, lineage: Lineage) -> None:
    """Point the admission's session-keyed checks at the session lineage resolved."""
    session = lineage.session
    adm.session = session
    if adm.loop is not None:
        adm.loop.session = session
        if adm.loop.chain is not None:
            adm.loop.chain = lineage.root
    for bc in adm.budgets:
        if bc.scope == "session":
            bc.name = session
