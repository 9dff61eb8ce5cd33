"""Redis clients built from `state.redis`: one Redis, or a Redis Cluster reached from its
seeds; asyncio for the state and the semantic cache's feed, synchronous for the audit sink
(which writes from a thread).

Every user of Redis in tollway builds its client here, so that `cluster: true` reaches all
of them. On a cluster nothing is retried by the client (`Retry(NoBackoff(), 0)`, as for a
single Redis): a command that fails fails fast, the state goes down and its probe takes
over. What the cluster client does add is following MOVED/ASK redirections (a seed that
does not own the gateway's slot works) and refreshing its map of slots after a connection
error, at most every `topology_refresh_min_interval`, so that a promoted replica is found
by the next probe. Slots need not all be covered (`require_full_coverage=False`): a
gateway needs only the one its hash tag picks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from tollway.state.redis.cluster import BoundedCluster

if TYPE_CHECKING:
    import redis

    from tollway.config.model import RedisConfig

# Everything a Redis call can raise for Redis's sake (RedisClusterException, the cluster
# client's "no node answers" and "slot not covered", is not a RedisError).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


def seeds(rc: RedisConfig) -> list[tuple[str, int]]:
    """The extra seed nodes (`cluster_nodes`) as (host, port); the url is the first seed."""
    out = []
    for url in rc.cluster_nodes:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None  # validated
        out.append((parts.hostname, parts.port))
    return out


def wait_s(rc: RedisConfig) -> float:
    """How long opening a connection or waiting for a free one may take: at least a second,
    so that a burst of new requests on a busy machine (dozens of connections opened at once)
    is not mistaken for Redis being down."""
    return max(1.0, 4 * rc.timeout_ms / 1000)


def async_client(rc: RedisConfig, *, socket_timeout: float, decode_responses: bool,
                 bounded: bool) -> Redis | BoundedCluster:
    """An asyncio client. `bounded`: at most `max_connections` commands in flight, a caller
    waiting up to `wait_s` for a turn (the state's link); otherwise a plain pool (the feed,
    whose reader blocks on the stream). A cluster client is always bounded."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout, "socket_connect_timeout": wait_s(rc),
        "protocol": 2, "decode_responses": decode_responses, "retry": Retry(NoBackoff(), 0)}
    if rc.cluster:
        return BoundedCluster.from_url(
            rc.url, startup_nodes=[ClusterNode(h, p) for h, p in seeds(rc)],
            max_connections=rc.max_connections, wait_s=wait_s(rc),
            require_full_coverage=False,
            topology_refresh_min_interval=min(1.0, rc.retry_interval_s / 2), **common)
    if bounded:
        pool = BlockingConnectionPool.from_url(
            rc.url, max_connections=rc.max_connections, timeout=wait_s(rc), **common)
        return Redis.from_pool(pool)
    return Redis.from_url(rc.url, **common)


def sync_client(rc: RedisConfig, *, socket_timeout: float,
                ) -> redis.Redis | redis.cluster.RedisCluster:
    """A synchronous client (redis-py's default retries: it runs off the event loop). The
    cluster client connects as it is built: build it where a failure is handled."""
    import redis
    from redis.cluster import ClusterNode as SyncClusterNode
    from redis.cluster import RedisCluster as SyncRedisCluster

    common: dict[str, Any] = {"socket_timeout": socket_timeout,
                              "socket_connect_timeout": socket_timeout, "protocol": 2}
    if rc.cluster:
        return SyncRedisCluster.from_url(
            rc.url, startup_nodes=[SyncClusterNode(h, p) for h, p in seeds(rc)],
            require_full_coverage=False, **common)
    return redis.Redis.from_url(rc.url, **common)
