"""Tool-call repeats and approvals in process memory (the semantics are in
tollway.state.toolstate). Repeat counters are bounded by `max_entries`, least recently
noted dropped first; approvals are pruned an hour after their deadline or decision."""

from __future__ import annotations

import time
from collections import OrderedDict

from tollway.state.toolstate import (
    APPROVED,
    KEEP_DECIDED_S,
    PENDING,
    REJECTED,
    Approval,
    Repeats,
    ResultNote,
    ToolState,
)


def _decide(a: Approval, approve: bool, by: str, reason: str | None) -> bool:
    if a.status != PENDING or time.time() >= a.expires:
        return False
    a.status = APPROVED if approve else REJECTED
    a.decided_by, a.reason, a.decided_at = by, reason, time.time()
    return True


_Run = tuple[str, int, float, str]  # (result digest, times in a row, expires, excerpt)


class MemoryToolState(ToolState):
    def __init__(self, max_entries: int = 100_000) -> None:
        # ("c", session, call) and ("t", session, tool), least recently noted first
        self._repeats: OrderedDict[tuple[str, str, str], _Run] = OrderedDict()
        self._approvals: dict[str, Approval] = {}
        self._max = max_entries

    def _run(self, key: tuple[str, str, str]) -> _Run | None:
        found = self._repeats.get(key)
        return found if found is not None and found[2] > time.time() else None

    async def repeats(self, session: str, call: str | None, tool: str | None) -> Repeats:
        c = self._run(("c", session, call)) if call is not None else None
        t = self._run(("t", session, tool)) if tool is not None else None
        return Repeats(c[1] if c else 0, t[1] if t else 0, t[3] if t else "")

    def _note(self, key: tuple[str, str, str], result: str | None, excerpt: str,
              window_s: float) -> int:
        if result is None:
            self._repeats.pop(key, None)
            return 0
        last = self._run(key)
        n = last[1] + 1 if last is not None and last[0] == result else 1
        self._repeats[key] = (result, n, time.time() + window_s, excerpt)
        self._repeats.move_to_end(key)
        return n

    async def note_result(self, session: str, note: ResultNote, window_s: float) -> Repeats:
        n_call = n_tool = 0
        if note.call is not None:
            n_call = self._note(("c", session, note.call), note.result, "", window_s)
        if note.tool is not None:
            n_tool = self._note(("t", session, note.tool), note.same, note.excerpt, window_s)
        while len(self._repeats) > self._max:
            self._repeats.popitem(last=False)
        return Repeats(n_call, n_tool, note.excerpt if n_tool else "")

    async def approval_put(self, a: Approval) -> None:
        self._prune()
        self._approvals[a.id] = a

    async def approval_get(self, approval_id: str) -> Approval | None:
        return self._approvals.get(approval_id)

    async def approvals(self) -> list[Approval]:
        self._prune()
        return sorted(self._approvals.values(), key=lambda a: a.created)

    async def approval_decide(self, approval_id: str, approve: bool, by: str,
                              reason: str | None) -> Approval | None:
        a = self._approvals.get(approval_id)
        if a is not None:
            _decide(a, approve, by, reason)
        return a

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_DECIDED_S
        for k in [k for k, a in self._approvals.items()
                  if max(a.expires, a.decided_at or 0) < cutoff]:
            del self._approvals[k]
