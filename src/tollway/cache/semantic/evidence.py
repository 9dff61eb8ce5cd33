"""How sure the cache is that a stored answer is right for a new request: learned, not set.

A fixed cosine threshold cannot be right for every model, prompt and entry. What the cache
learns instead, from its own traffic (after vCache, Schroeder et al., ICLR 2026): every time
it forwards a request it could have answered from the cache (an exploration), a judge says
whether the fresh answer agrees with the stored one. Each verdict is an observation
(similarity, correct). Two estimates come of them:

- **Per model** (the pool): the lowest similarity `x` above which the observed share of wrong
  answers is, with 99% confidence, at most the model's `max_error_rate` δ (a Wilson upper
  bound on the wrong share among the observations at or above `x`, one-sided 99%: `x` is the
  lowest of many candidates, and 95% let the served error pass δ on public data). No such
  `x` until enough evidence has come in (at δ = 1% and nothing wrong, 536 observations):
  the cache then serves nothing and explores, so hits grow as evidence accumulates and
  the error stays within δ from the first hit on.
- **Per entry**: an entry judged wrong at similarity `s` is never served below `s` again (its
  threshold only rises), so one bad neighbour does not keep costing wrong answers.

Served hits go on being checked: a share `explore_rate(n)` of them is forwarded and judged
anyway, shrinking with the evidence (`c / sqrt(n)`, never below `explore_min`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BINS = 400  # similarity in [0, 1] in steps of 0.0025
Z = 2.326  # one-sided 99%: the threshold is the lowest of many candidates, so 95% was optimistic
ENTRY_KEEP = 16  # observations kept per entry
EXPLORE_C = 3.0  # would-be hits explored: EXPLORE_C / sqrt(n) after n verdicts


def _bin(s: float) -> int:
    return min(BINS - 1, max(0, int(s * BINS)))


def wilson_upper(wrong: int, n: int, z: float = Z) -> float:
    """Upper confidence bound of a binomial proportion (Wilson score interval)."""
    if n <= 0:
        return 1.0
    p = wrong / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


@dataclass(slots=True)
class Pool:
    """Judged observations of one model, binned by similarity."""

    correct: list[int] = field(default_factory=lambda: [0] * BINS)
    wrong: list[int] = field(default_factory=lambda: [0] * BINS)
    n: int = 0
    _cache: dict[float, float | None] = field(default_factory=dict)

    def add(self, similarity: float, ok: bool, count: int = 1) -> None:
        (self.correct if ok else self.wrong)[_bin(similarity)] += count
        self.n += count
        self._cache.clear()

    def threshold(self, delta: float) -> float | None:
        """The lowest similarity whose at-or-above observations bound the wrong share by
        `delta`; None while the evidence cannot say so."""
        if delta in self._cache:
            return self._cache[delta]
        found: float | None = None
        ok = bad = 0
        for i in range(BINS - 1, -1, -1):
            ok += self.correct[i]
            bad += self.wrong[i]
            if ok + bad and wilson_upper(bad, ok + bad) <= delta:
                found = i / BINS
        self._cache[delta] = found
        return found

    def above(self, similarity: float) -> tuple[int, int]:
        """(correct, wrong) observed at or above this similarity."""
        i = _bin(similarity)
        return sum(self.correct[i:]), sum(self.wrong[i:])

    def error_at(self, threshold: float | None) -> float | None:
        """The observed wrong share of what this threshold serves (None: serves nothing)."""
        if threshold is None:
            return None
        ok, bad = self.above(threshold)
        return bad / (ok + bad) if ok + bad else None


@dataclass(slots=True)
class EntryEvidence:
    """What was judged of one stored answer: (similarity, correct), newest last."""

    seen: list[tuple[float, bool]] = field(default_factory=list)
    floor: float = 0.0  # never served below this: its highest wrong verdict

    def add(self, similarity: float, ok: bool) -> None:
        self.seen.append((round(similarity, 4), ok))
        del self.seen[:-ENTRY_KEEP]
        if not ok:
            self.floor = max(self.floor, similarity + 1 / BINS)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "hit" | "explore" | "miss"
    confidence: float  # 1 - the bound on the wrong share of what the threshold serves
    threshold: float | None  # the entry's: the model's, raised by the entry's own verdicts


def explore_rate(n: int, c: float, floor: float) -> float:
    return max(floor, min(1.0, c / math.sqrt(n + 1)))


def decide(pool: Pool, entry: EntryEvidence | None, similarity: float, delta: float,
           draw: float, explore_c: float = EXPLORE_C, explore_min: float = 0.02) -> Decision:
    """Serve, explore or miss a candidate at this similarity. `draw`: uniform in [0, 1)."""
    base = pool.threshold(delta)
    t = base
    if t is not None and entry is not None and entry.floor > t:
        t = entry.floor
    if t is None or base is None or similarity < t:
        return Decision("explore", 0.0, t)  # forwarding anyway costs what a miss costs
    ok, bad = pool.above(base)  # the evidence the bound stands on
    confidence = 1.0 - wilson_upper(bad, ok + bad)
    if draw < explore_rate(ok + bad, explore_c, explore_min):
        return Decision("explore", confidence, t)
    return Decision("hit", confidence, t)
