"""Scripts on a node that does not know them (a restarted Redis, a promoted replica): run
alone they are sent whole on NOSCRIPT; queued in a pipeline (`client=pipe`, as the ledger
replays its queue) they run too, on one Redis and on a cluster from any seed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollway.state.redis import RedisState

if TYPE_CHECKING:
    from tests.state.conftest import MakeState

_INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_a_script_alone_and_in_pipelines_after_script_flush(
        make_shared_state: MakeState) -> None:
    st: RedisState = await make_shared_state()
    link = st._link
    incr = link.inline_script(_INCR)
    key = link.key("script-test")
    await link.redis.script_flush()  # every node forgets every script
    assert await incr(keys=[key], args=[1]) == 1
    for transaction, want in ((False, [3, 5, 7, 9, 11]), (True, [13, 15, 17, 19, 21])):
        await link.redis.script_flush()
        async with link.redis.pipeline(transaction=transaction) as pipe:
            for _ in range(5):
                await incr(keys=[key], args=[2], client=pipe)
            assert await pipe.execute() == want
    assert await incr(keys=[key], args=[0]) == 21
