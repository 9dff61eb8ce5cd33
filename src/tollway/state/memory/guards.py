"""The guards in process memory: kill switch, loop counters, GCRA rate limits and budget
reservations, checked and taken in one synchronous step (nothing can interleave in one
process). The kill and pause switches are read from the flags facet; the ledger settles
reservations and token buckets here (`settle`) as it records a request.

A reservation is held under its request (`BudgetCheck.holder`) until that request settles
or `hold_s` passes, so settling twice releases it once, and one that is never settled
cannot hold a budget forever. Settling a request that holds nothing leaves a tombstone for
a while: an admit of it after that (Redis can run an admit late, after its request timed
out and settled) reserves nothing, here as on Redis."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from typing import Any

from tollway.state.base import Guards
from tollway.state.guards import Admission, Settlement, Verdict
from tollway.state.lineage import follow
from tollway.state.memory.flags import MemoryFlags
from tollway.state.memory.lineage import MemoryLineage

EPSILON = 1e-12
TOMBSTONE_S = 900.0  # as long as a record id is remembered (DEDUPE_S)


class MemoryGuards(Guards):
    def __init__(self, flags: MemoryFlags, lineage: MemoryLineage,
                 max_sessions: int = 20_000) -> None:
        self._flags = flags
        self._lineage = lineage
        self._max_sessions = max_sessions
        self._tat: dict[str, float] = {}  # GCRA theoretical arrival time, µs
        self._budgets: dict[str, list[float]] = {}  # key -> [spent, reserved, expires]
        self._fingerprints: dict[tuple[str, str], list[float]] = {}  # -> [count, expires]
        self._steps: OrderedDict[str, list[float]] = OrderedDict()  # session -> [n, first]
        self._chains: OrderedDict[str, list[Any]] = OrderedDict()  # chain -> [agent, rounds]
        # holder -> (lapses at, [(budget key, amount)], or None: settled, a tombstone)
        self._holds: OrderedDict[str, tuple[float, list[tuple[str, float]] | None]] = (
            OrderedDict())
        self._holders = itertools.count(1)
        self._admits = 0

    async def admit(self, adm: Admission) -> Verdict:
        v = Verdict()
        if adm.lineage is not None:
            v.lineage = self._lineage.resolve(adm.lineage, time.time())
            follow(adm, v.lineage)
        if adm.budgets:
            holder = adm.request_id or f"h{next(self._holders)}"
            for bc in adm.budgets:
                bc.holder = holder
        if adm.session in self._flags.killed:
            v.allowed, v.denied_by = False, "killed"
            return v
        if adm.agent in self._flags.paused:
            v.allowed, v.denied_by = False, "paused"
            return v
        now = time.time()
        self._admits += 1
        if self._admits % 4096 == 0:
            self._purge(now)
        if adm.loop is not None:
            self._count_loop(adm, v, now)
        now_us = now * 1e6
        new_tats = []
        for rc in adm.rates:
            tat = max(self._tat.get(rc.key, now_us), now_us)
            new_tat = tat + rc.interval_us * rc.cost
            allow_at = new_tat - rc.tolerance_us
            if allow_at > now_us:
                v.allowed, v.denied_by, v.rate = False, "rate", rc
                v.retry_after_s = (allow_at - now_us) / 1e6
                return v
            new_tats.append((rc.key, new_tat))
            v.rate_state.append((int((rc.tolerance_us - (new_tat - now_us)) / rc.interval_us),
                                 (new_tat - now_us) / 1e6))
        if adm.budgets:
            self._lapse(now)
            if (held := self._holds.get(adm.budgets[0].holder)) is not None and held[1] is None:
                v.allowed, v.denied_by = False, "stale"  # its request settled already
                return v
        for bc in adm.budgets:
            spent, reserved = self._budget(bc.key, now)
            v.budget_state.append((spent, reserved))
            if spent + reserved + bc.reserve > bc.limit + EPSILON:
                v.allowed, v.denied_by, v.budget = False, "budget", bc
                return v
        for key, tat in new_tats:
            self._tat[key] = tat
        if adm.budgets:
            held = []
            for bc in adm.budgets:
                entry = self._budgets.get(bc.key)
                if entry is None:
                    entry = self._budgets[bc.key] = [0.0, 0.0,
                                                     now + bc.ttl_s if bc.ttl_s else 0.0]
                entry[1] += bc.reserve
                held.append((bc.key, bc.reserve))
            self._holds[holder] = (now + adm.hold_s, held)
        return v

    async def budget_usage(self, key: str) -> tuple[float, float]:
        return self._budget(key, time.time())

    def settle(self, settle: Settlement) -> None:
        """Undo the reservations and add the real costs; move token buckets by the usage."""
        now = time.time()
        for bc, actual in settle.budgets:
            if bc.holder:
                self._release(bc.holder, now)
            entry = self._budgets.get(bc.key)
            if entry is None:
                entry = self._budgets[bc.key] = [0.0, 0.0, now + bc.ttl_s if bc.ttl_s else 0.0]
            entry[0] += actual
        for rc, delta in settle.token_rates:
            if rc.key in self._tat:
                self._tat[rc.key] += delta * rc.interval_us

    def _count_loop(self, adm: Admission, v: Verdict, now: float) -> None:
        lp = adm.loop
        assert lp is not None
        if lp.fingerprint:
            fkey = (lp.session, lp.fingerprint)
            entry = self._fingerprints.get(fkey)
            if entry is None or entry[1] < now:
                entry = self._fingerprints[fkey] = [0, now + lp.fp_window_s]
            entry[0] += 1
            v.repeats = int(entry[0])
        if lp.steps:
            st = self._steps.get(lp.session)
            if st is None:
                st = self._steps[lp.session] = [0, now]
                if len(self._steps) > self._max_sessions:
                    self._steps.popitem(last=False)
            else:
                self._steps.move_to_end(lp.session)
            st[0] += 1
            v.steps, v.age_s = int(st[0]), now - st[1]
        if lp.chain:
            ch = self._chains.get(lp.chain)
            if ch is None:
                ch = self._chains[lp.chain] = [lp.agent, 0]
                if len(self._chains) > self._max_sessions:
                    self._chains.popitem(last=False)
            elif ch[0] != lp.agent:
                ch[0] = lp.agent
                ch[1] += 1
            v.rounds = int(ch[1])

    def _release(self, holder: str, now: float) -> None:
        """Give back what a request reserved (nothing the second time)."""
        held = self._holds.pop(holder, None)
        if held is None:
            self._holds[holder] = (now + TOMBSTONE_S, None)
            return
        if held[1] is None:  # a tombstone stays until it lapses
            self._holds[holder] = held
            return
        for key, amount in held[1]:
            entry = self._budgets.get(key)
            if entry is not None:
                left = entry[1] - amount
                entry[1] = left if left >= EPSILON else 0.0  # no float residue at the end

    def _lapse(self, now: float) -> None:
        """Release the reservations past their hold (requests that never settled)."""
        holds = self._holds
        while holds:
            holder, (until, held) = next(iter(holds.items()))
            if until > now:
                return
            if held is None:
                del holds[holder]
            else:
                self._release(holder, now)

    def _budget(self, key: str, now: float) -> tuple[float, float]:
        entry = self._budgets.get(key)
        if entry is None:
            return 0.0, 0.0
        if entry[2] and entry[2] < now:
            del self._budgets[key]
            return 0.0, 0.0
        return entry[0], entry[1]

    def _purge(self, now: float) -> None:
        for k in [k for k, e in self._fingerprints.items() if e[1] < now]:
            del self._fingerprints[k]
        for k in [k for k, e in self._budgets.items() if e[2] and e[2] < now]:
            del self._budgets[k]

