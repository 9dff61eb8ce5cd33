"""Session lineage in process memory: the rules of state/lineage.py, on bounded maps whose
entries lapse after the query's window (admit.lua and record.lua do the same on Redis)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tollway.state.lineage import Lineage, LineageQuery, LineageWrite

_MAX = 200_000  # entries per map: the oldest go first
COMMON = ("*",)  # a fingerprint three or more sessions' answers carry: boilerplate


class _Expiring:
    """A map whose entries lapse; insertion order is roughly expiry order."""

    def __init__(self) -> None:
        self._d: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any, now: float) -> Any:
        hit = self._d.get(key)
        if hit is None:
            return None
        if hit[0] < now:
            del self._d[key]
            return None
        return hit[1]

    def put(self, key: Any, value: Any, until: float) -> None:
        self._d[key] = (until, value)
        self._d.move_to_end(key)
        if len(self._d) > _MAX:
            self._d.popitem(last=False)

    def sweep(self, now: float) -> None:
        d = self._d
        while d and next(iter(d.values()))[0] < now:
            d.popitem(last=False)


class MemoryLineage:
    def __init__(self) -> None:
        self._answers = _Expiring()  # answer key -> (agent, session)
        self._prints = _Expiring()  # fingerprint -> the (one or two) sessions that said it
        self._responses = _Expiring()  # response id -> session
        self._openings = _Expiring()  # (agent, digest) -> (session, runs)
        self._progressed = _Expiring()  # session -> True once a request continued it
        self._roots = _Expiring()  # session -> the root of its chain
        self._children = _Expiring()  # parent -> {child: None}
        self._calls = 0

    def resolve(self, q: LineageQuery, now: float) -> Lineage:
        self._calls += 1
        if self._calls % 4096 == 0:
            for m in (self._answers, self._prints, self._responses, self._openings,
                      self._progressed, self._roots, self._children):
                m.sweep(now)
        until = now + q.window_s
        parent = q.parent
        if q.named:
            session, how = q.named, "header"
        elif q.response and (s := self._responses.get(q.response, now)) is not None:
            session, how = s, "response"
            self._progressed.put(session, True, until)
        elif q.answers:
            found = next((f for k in q.answers if (f := self._answers.get(k, now))), None)
            if found is not None and found[0] == q.agent:
                session, how = found[1], "continued"
                self._progressed.put(session, True, until)
            else:
                session, how = q.seed, "unknown"
                if found is not None and parent is None:
                    parent = found[1]  # another agent's answer in its history
        elif q.opening:
            key = (q.agent, q.opening)
            known = self._openings.get(key, now)
            if known is None:
                session, how = q.seed, "opened"
                self._openings.put(key, (session, 1), until)
            elif not self._progressed.get(known[0], now):
                session, how = known[0], "repeated"
            else:
                runs = known[1] + 1
                session, how = f"{q.seed}-{runs}", "restarted"
                self._openings.put(key, (session, runs), until)
        else:
            session, how = q.seed, "unknown"
        if parent is None:
            parent = next((s for fp in q.handoff
                           if (said := self._prints.get(fp, now)) and said != COMMON
                           for s in said if s != session), None)
        root = self._roots.get(session, now)
        if root is None:
            root = (self._roots.get(parent, now) or parent) if parent else session
            self._roots.put(session, root, until)
        if parent:
            kids = self._children.get(parent, now) or {}
            kids[session] = None
            self._children.put(parent, kids, until)
        return Lineage(session, parent, root, how)

    def write(self, w: LineageWrite, now: float) -> None:
        until = now + w.window_s
        for key in w.answers:
            self._answers.put(key, (w.agent, w.session), until)
        for fp in w.handoff:
            # Up to two sessions per fingerprint (one that said it, one that quoted it back);
            # a third that says it too makes it boilerplate, which links nothing.
            known = self._prints.get(fp, now) or ()
            if w.session not in known:
                known = (*known, w.session) if len(known) < 2 and known != COMMON else COMMON
            self._prints.put(fp, known, until)
        if w.response:
            self._responses.put(w.response, w.session, until)

    def children(self, session: str, now: float) -> list[str]:
        return list(self._children.get(session, now) or ())
