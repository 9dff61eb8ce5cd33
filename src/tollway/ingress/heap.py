"""The garbage collector set for a long-running proxy, once the gateway is up.

CPython's cyclic collector runs a young collection every 700 new container objects and a
full one whenever the objects that survived grew by a quarter. A gateway under load keeps
fifty requests in flight, each holding a few hundred such objects; every young collection
finds them alive and promotes them, so the old generation grows fast and full collections
(which walk every object: the imported modules, the config, the tokenizer's tables, the
sessions and lineage the memory state keeps) came about once a second. Measured on the
repository's gateway.yaml under wrk (bench/wrk.py's load, 48 s): 9.3 s in the collector,
a fifth of the process's CPU and growing with the state; after this, 0.4 s.

Two changes: what exists at start-up is frozen (moved to a generation the collector never
walks: it is the program, not garbage), and a young collection waits for 10,000 new
objects, so that requests finish before their objects are judged long-lived. Full
collections still run (after 20 x 20 young ones and the same growth rule), so cycles that
outlive a request are still freed.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 20)


def settle() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
