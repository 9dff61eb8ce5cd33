"""The guards on Redis: one EVALSHA of admit.lua per request (kill switch, loop counters,
GCRA rate limits on the server's clock, budget reservations; atomic and all-or-nothing).

While the state is down, `admit` raises StateUnavailable at once rather than make every
request wait the timeout; the caller applies state.on_failure. An admit that timed out may
still run when Redis answers again (it was sent): StateUnavailable says so (`sent`), and
its reservations, held under the request id, are released by the request's settlement or
lapse after `hold_s`.
"""

from __future__ import annotations

import itertools
from typing import Any

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway.state.base import Guards, StateUnavailable
from tollway.state.guards import Admission, Verdict
from tollway.state.lineage import Lineage, follow
from tollway.state.redis.link import DOWN_ERRORS, RedisLink, num
from tollway.state.sessions import HOUR


class RedisGuards(Guards):
    def __init__(self, link: RedisLink, retention_hours: int, max_sessions: int) -> None:
        self._link = link
        self._retention = retention_hours
        self._max_sessions = max_sessions
        self._admit_script = link.script("admit.lua")
        self._holders = itertools.count(1)

    async def admit(self, adm: Admission) -> Verdict:
        link = self._link
        if not link.up:  # don't make every request wait the timeout while down
            link.count("admit")
            raise StateUnavailable("redis state is down")
        k = link.key
        # Callers always give a request id; one that does not (a test) gets a holder of this
        # instance's own, numbered as the memory backend numbers them.
        holder = (adm.request_id or f"h{next(self._holders)}") if adm.budgets else ""
        lp = adm.loop
        fp = lp.fingerprint if lp is not None else None
        chain = lp.chain if lp is not None else None
        keys = [k("ks", "s", adm.session), k("ks", "a", adm.agent),
                k("fp", fp or "", adm.session), k("st", adm.session),
                k("ch", chain or adm.session), k("ix", "st"),
                k("ix", "ch")]
        args: list[str | int] = [
            self._retention * HOUR,
            max(0, round(lp.fp_window_s * 1000)) if fp and lp is not None else -1,
            1 if lp is not None and lp.steps else 0, 1 if chain else 0, adm.agent,
            adm.session, chain or "", self._max_sessions, len(adm.rates), len(adm.budgets),
            holder, max(1, round(adm.hold_s * 1000))]
        for rc in adm.rates:
            keys.append(k("rl", rc.key))
            args += [num(rc.interval_us), num(rc.tolerance_us), rc.cost]
        for bc in adm.budgets:
            bc.holder = holder
            keys += [k("bu", bc.key), k("bx", bc.key)]
            args += [num(bc.limit), num(bc.reserve), bc.ttl_s, 1 if bc.scope == "session" else 0]
        q = adm.lineage
        if q is None:
            args.append(0)
        else:
            args += [1, link.key(""), q.seed, num(q.window_s), q.named or "", q.parent or "",
                     q.response or "", q.opening or "", fp or "", len(q.answers), *q.answers,
                     len(q.handoff), *q.handoff]
        try:
            raw = await self._admit_script(keys=keys, args=args)
        except DOWN_ERRORS as exc:
            link.mark_down("admit", exc)
            sent = isinstance(exc, RedisTimeoutError | TimeoutError)
            raise StateUnavailable(f"redis: {exc}", sent=sent) from exc
        except RedisError as exc:
            link.count("admit")
            raise StateUnavailable(f"redis: {exc}") from exc
        v = _verdict(adm, raw)
        if q is not None:
            session, parent, root, how = raw[-4:]
            v.lineage = Lineage(session, parent or None, root, how)
            follow(adm, v.lineage)
        return v

    async def budget_usage(self, key: str) -> tuple[float, float]:
        spent, reserved = await self._link.call(
            "query", lambda: self._link.redis.hmget(self._link.key("bu", key),
                                                    ["spent", "reserved"]))
        return float(spent or 0.0), float(reserved or 0.0)


def _verdict(adm: Admission, raw: list[Any]) -> Verdict:
    """The admit.lua reply as a Verdict (layout documented in the script)."""
    v = Verdict()
    if raw[0] != "1":
        v.allowed, v.denied_by = False, raw[1]
        if v.denied_by in ("killed", "paused"):
            return v
    index = int(raw[2])
    if v.denied_by == "rate":
        v.rate, v.retry_after_s = adm.rates[index - 1], float(raw[3])
    elif v.denied_by == "budget":
        v.budget = adm.budgets[index - 1]
    v.repeats, v.steps, v.age_s, v.rounds = int(raw[4]), int(raw[5]), float(raw[6]), int(raw[7])
    n = int(raw[8])
    i = 9
    v.rate_state = [(int(float(raw[i + 2 * j])), float(raw[i + 2 * j + 1])) for j in range(n)]
    i += 2 * n
    m = int(raw[i])
    v.budget_state = [(float(raw[i + 1 + 2 * j]), float(raw[i + 2 + 2 * j])) for j in range(m)]
    return v
