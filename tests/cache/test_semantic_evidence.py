"""The learned error bound (cache/semantic/evidence.py): no hit without evidence, the served
error stays within δ on a stream it never saw, hits grow as evidence comes in, an entry
judged wrong is never served below that similarity again."""

from __future__ import annotations

import math
import random

import pytest

from tollway.cache.semantic.evidence import EntryEvidence, Pool, decide, wilson_upper


def test_wilson_upper_bound() -> None:
    assert wilson_upper(0, 0) == 1.0
    assert wilson_upper(0, 536) <= 0.01 < wilson_upper(0, 535)  # 536 clean verdicts for 1%
    assert wilson_upper(0, 103) <= 0.05 < wilson_upper(0, 102)  # 103 for 5%
    assert wilson_upper(5, 100, z=1.645) == pytest.approx(0.101, abs=0.002)
    assert wilson_upper(50, 100) > 0.5


def test_nothing_is_served_without_evidence() -> None:
    pool = Pool()
    assert pool.threshold(0.01) is None
    d = decide(pool, None, 0.999, 0.01, draw=0.99)
    assert d.action == "explore" and d.threshold is None


def test_the_threshold_bounds_the_wrong_share_of_what_it_serves() -> None:
    pool = Pool()
    rng = random.Random(1)
    for _ in range(5000):  # correct above 0.9, mostly wrong below
        s = rng.uniform(0.8, 1.0)
        pool.add(s, rng.random() < (0.999 if s >= 0.9 else 0.4))
    t = pool.threshold(0.01)
    assert t is not None and 0.88 <= t <= 0.92
    ok, bad = pool.above(t)
    assert wilson_upper(bad, ok + bad) <= 0.01
    assert pool.threshold(0.05) is not None and pool.threshold(0.05) <= t  # looser: lower


def simulate(delta: float, queries: int, seed: int) -> tuple[int, int, list[int]]:
    """A stream of candidates whose chance of being right rises with similarity (a logistic
    the estimator does not know, centred at 0.93): served, wrong among served, and hits per
    block of 1000 queries."""
    rng = random.Random(seed)
    pool = Pool()
    served = wrong = 0
    hits_per_block = [0] * (queries // 1000)
    for q in range(queries):
        s = rng.uniform(0.8, 1.0)
        right = rng.random() < 1 / (1 + math.exp(-120 * (s - 0.93)))
        d = decide(pool, None, s, delta, rng.random())
        if d.action == "hit":
            served += 1
            wrong += not right
            hits_per_block[q // 1000] += 1
        else:  # explored: the judge sees the truth
            pool.add(s, right)
    return served, wrong, hits_per_block


@pytest.mark.parametrize("delta", [0.01, 0.05])
def test_served_error_stays_within_delta_while_hits_grow(delta: float) -> None:
    served, wrong, blocks = simulate(delta, 20_000, seed=7)
    assert served > 1500
    assert wrong / served <= delta  # measured: 0.16-0.33% at 1%, 1.5-2.6% at 5%
    assert blocks[0] < blocks[5] and blocks[1] < blocks[-1]  # hits grow with the evidence


def test_an_entry_judged_wrong_is_not_served_below_it_again() -> None:
    pool = Pool()
    for i in range(2000):
        pool.add(0.85 + (i % 100) / 1000, True)
    entry = EntryEvidence()
    assert decide(pool, entry, 0.93, 0.01, draw=0.99).action == "hit"
    entry.add(0.95, False)
    d = decide(pool, entry, 0.93, 0.01, draw=0.99)
    assert d.action == "explore" and d.threshold is not None and d.threshold > 0.95
    assert decide(pool, entry, 0.99, 0.01, draw=0.99).action == "hit"


def test_would_be_hits_keep_being_explored_less_as_evidence_grows() -> None:
    pool = Pool()
    for _ in range(600):
        pool.add(0.97, True)
    few = sum(decide(pool, None, 0.98, 0.01, draw=i / 1000).action == "explore"
              for i in range(1000))
    for _ in range(30_000):
        pool.add(0.97, True)
    many = sum(decide(pool, None, 0.98, 0.01, draw=i / 1000).action == "explore"
               for i in range(1000))
    assert few > 100 and 15 <= many < 40  # 3/sqrt(n), never below explore_min (2%)
