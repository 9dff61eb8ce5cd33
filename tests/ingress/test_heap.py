"""ingress.heap: what start-up made is frozen and young collections wait for more objects."""

from __future__ import annotations

import gc

from tollway.ingress import heap


def test_settle_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the imported program, at least
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle made after start-up is still collected
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
