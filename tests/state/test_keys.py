"""The runtime keys facet on every backend (memory, Redis, a Redis Cluster from each seed):
create, get, list, rotate with and without grace, revoke, and the version counter that
replicas poll. Digests are stored; secrets never are."""

from __future__ import annotations

import asyncio

import pytest

from tollway.state.base import State
from tollway.state.keys import (
    PREVIOUS_KEPT,
    KeyExists,
    KeyRecord,
    KeyRevoked,
    new_id,
    new_secret,
)


def _rec(agent: str = "bot", **kw: object) -> tuple[str, KeyRecord]:
    secret, digest = new_secret()
    return secret, KeyRecord(id=new_id(), agent=agent, digest=digest, created=1000.0,
                             **kw)  # type: ignore[arg-type]


async def test_create_get_list(any_state: State) -> None:
    keys = any_state.keys
    v0 = await keys.version()
    secret, a = _rec("bot", models=("gpt-*",), tools=("weather",), expires=5000.0,
                     budget_usd_day=2.5, rpm=30, label="ci")
    _, b = _rec("other")
    await keys.create(a)
    await keys.create(b)
    assert await keys.version() >= v0 + 2
    got = await keys.get(a.id)
    assert got == a
    assert got is not None and got.models == ("gpt-*",) and got.budget_usd_day == 2.5
    assert await keys.get("key_nope") is None
    assert [r.id for r in await keys.list("bot")] == [a.id]
    assert {r.id for r in await keys.list()} == {a.id, b.id}
    with pytest.raises(KeyExists):
        await keys.create(a)
    version, recs = await keys.snapshot()
    assert version == await keys.version() and len(recs) == 2
    assert secret not in str(recs)  # only the digest is kept


async def test_revoke(any_state: State) -> None:
    keys = any_state.keys
    _, a = _rec()
    await keys.create(a)
    v = await keys.version()
    done = await keys.revoke(a.id, now=2000.0)
    assert done is not None and done.revoked == 2000.0
    assert await keys.version() > v
    again = await keys.revoke(a.id, now=3000.0)  # idempotent: the first time stays
    assert again is not None and again.revoked == 2000.0
    assert (await keys.get(a.id)) == done
    assert await keys.revoke("key_nope") is None
    assert done.view(2500.0)["status"] == "revoked"


async def test_rotate_with_grace(any_state: State) -> None:
    keys = any_state.keys
    _, a = _rec()
    await keys.create(a)
    _, d1 = new_secret()
    r1 = await keys.rotate(a.id, d1, grace_s=30, now=2000.0)
    assert r1 is not None and r1.digest == d1 and r1.rotated == 2000.0
    assert r1.previous == ((a.digest, 2030.0),)
    assert r1.view(2010.0)["grace_until"] == 2030.0
    view = r1.view(2010.0)
    assert "digest" not in view and "previous" not in view
    assert d1 not in str(view) and a.digest not in str(view)
    # A second rotation ends the first grace at once.
    _, d2 = new_secret()
    r2 = await keys.rotate(a.id, d2, grace_s=0, now=2005.0)
    assert r2 is not None and r2.previous == ((d1, 2005.0), (a.digest, 2005.0))
    for _ in range(PREVIOUS_KEPT + 2):
        _, d = new_secret()
        await keys.rotate(a.id, d, now=2006.0)
    last = await keys.get(a.id)
    assert last is not None and len(last.previous) == PREVIOUS_KEPT
    assert await keys.rotate("key_nope", d) is None
    await keys.revoke(a.id)
    with pytest.raises(KeyRevoked):
        await keys.rotate(a.id, d)


async def test_concurrent_writes_all_land(any_state: State) -> None:
    """Rotations racing on one key: each is applied once, none is lost (compare-and-set)."""
    keys = any_state.keys
    _, a = _rec()
    await keys.create(a)
    digests = [new_secret()[1] for _ in range(8)]
    await asyncio.gather(*(keys.rotate(a.id, d, now=2000.0 + i)
                           for i, d in enumerate(digests)))
    last = await keys.get(a.id)
    assert last is not None and last.digest in digests
    assert len(last.previous) == PREVIOUS_KEPT
    assert {d for d, _ in last.previous} <= {a.digest, *digests}
