"""Which deployment of a model to try first; the others follow as in-model fallbacks."""

from __future__ import annotations

import random

from tollway.providers.registry import Deployment, ModelRoute


def order(route: ModelRoute, rng: random.Random) -> list[Deployment]:
    deps = route.deployments
    if len(deps) <= 1:
        return list(deps)
    if route.balance == "least_inflight":
        first = min(deps, key=lambda d: (d.inflight, rng.random()))
    elif route.balance == "latency":
        # An untried deployment (no EWMA yet) goes first, so every one gets measured.
        first = min(deps, key=lambda d: (d.ewma_s, rng.random()))
    else:
        first = rng.choices(deps, [d.weight for d in deps])[0]
    return [first, *(d for d in deps if d is not first)]
