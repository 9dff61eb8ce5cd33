"""A session as both backends hold it, and the two shapes the admin API shows it in.

The memory ledger keeps `Session` records; the Redis ledger rebuilds them from a session's
summary hash and step list. Both render them with `session_summary` and `session_view`, so
a session reads the same whichever backend stored it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tollway.state.records import SpendRow, StepRecord

HOUR = 3600  # spend is bucketed per hour; retention is counted in hours


@dataclass(slots=True)
class Session:
    agent: str
    team: str
    first: float
    last: float
    steps: deque[StepRecord]
    totals: SpendRow = field(default_factory=lambda: SpendRow(""))
    step_count: int = 0
    observed: bool = False  # handed out to the session-cost histogram


def session_summary(sid: str, s: Session) -> dict[str, Any]:
    t = s.totals
    return {"session": sid, "agent": s.agent, "team": s.team, "first": s.first, "last": s.last,
            "steps": s.step_count, "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens, "cached_tokens": t.cached_tokens,
            "cost_usd": round(t.cost_usd, 10)}


def session_view(sid: str, s: Session, children: list[str] | None = None) -> dict[str, Any]:
    """The session and its steps, with its lineage: the sessions that handed it work
    (its steps' parents) and those it handed work to."""
    view = session_summary(sid, s)
    view["parents"] = list(dict.fromkeys(st.parent for st in s.steps if st.parent))
    view["children"] = sorted(children or ())
    view["steps_kept"] = len(s.steps)
    view["steps"] = [{"step": s.step_count - len(s.steps) + i + 1, **st.to_dict()}
                     for i, st in enumerate(s.steps)]
    view["now"] = time.time()
    return view


def session_spend(sid: str, s: Session, since: float | None) -> SpendRow:
    """A session's spend as a row of `spend(by="session")`: all of it, or its steps since."""
    row = SpendRow(sid)
    if since is None:
        row.merge(s.totals)
    else:
        for st in s.steps:
            if st.time >= since:
                row.add(st)
    row.extra = {"agent": s.agent, "team": s.team}
    return row


def top_sessions(summaries: list[dict[str, Any]], sort: str, limit: int,
                 ) -> list[dict[str, Any]]:
    """The first `limit` summaries by cost, steps or recency."""
    key = {"cost": "cost_usd", "steps": "steps", "recent": "last"}.get(sort, "cost_usd")
    summaries.sort(key=lambda d: -d[key])
    return summaries[:limit]
