"""The process-level sections of gateway.yaml: server, state (memory or Redis) and identity."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, ValidationInfo, field_validator

from tollway.config.base import Strict, check_key

_SCHEMES = ("redis", "rediss", "unix")


class AdminListenerConfig(Strict):
    """The admin listener: the admin API, the operator console and /metrics, on a port of
    their own that is never behind the public Service."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(4101, ge=0, le=65535)  # 0: any free port


class OperatorConfig(Strict):
    """A person (or a script) allowed into the admin API and the console."""

    # Plain or "sha256:<hex>"; presented as a bearer token, or at the console's login.
    token: str = Field(repr=False)
    # viewer: read everything; approver: and decide approvals; admin: and kill, pause,
    # keys, reload, purge.
    role: Literal["viewer", "approver", "admin"] = "viewer"

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        check_key(v)
        return v


class ServerConfig(Strict):
    host: str = "0.0.0.0"
    port: int = Field(4100, ge=0, le=65535)  # 0: any free port
    max_body_mb: float = Field(16, gt=0)
    # Slow clients hold a connection and a task each. A request's headers must be complete
    # within header_timeout_s of its first byte (else the connection is closed), and its
    # body within body_timeout_s of the headers (else 408 in the endpoint's dialect).
    header_timeout_s: float = Field(10, gt=0)
    body_timeout_s: float = Field(60, gt=0)
    drain_timeout_s: float = Field(30, ge=0)
    # The admin API needs it as a bearer token; empty: the admin API is closed (403).
    # Plain or "sha256:<hex>".
    admin_key: str | None = Field(None, repr=False)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    watch_interval_s: float = Field(2.0, ge=0)  # how often the config file is checked; 0: off
    # Processes serving the port (SO_REUSEPORT); more than 1 needs state.backend: redis.
    workers: int = Field(1, ge=1)
    admin: AdminListenerConfig = Field(default_factory=AdminListenerConfig)
    # /metrics on the main port too (the admin listener always has it): on while
    # dashboards and scrapers move to the admin port.
    metrics_on_main: bool = True

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, v: str | None) -> str | None:
        if v:
            check_key(v)
        return v or None


class RedisConfig(Strict):
    # redis://[user:password@]host:port/db, rediss:// for TLS, unix:///path.sock?db=0. With
    # cluster: true, any node of the cluster (a seed: the others are learnt from it).
    url: str = Field("redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    # A Redis Cluster (redis-py's cluster client): follows MOVED/ASK redirections and
    # refreshes the topology when a node fails or a replica is promoted.
    cluster: bool = False
    # More seeds: the client asks the seeds in random order until one answers with the
    # cluster's layout. "redis://host:port" each (credentials and TLS are the url's).
    cluster_nodes: list[str] = Field(default_factory=list)
    # Every key starts with "{prefix}:": one hash tag, so in a Redis Cluster all of a
    # gateway's keys are in one slot and every script stays atomic.
    key_prefix: str = Field("tollway", min_length=1)
    timeout_ms: int = Field(250, ge=10)  # per command; past it the state counts as down
    max_connections: int = Field(64, ge=1)  # commands in flight at once, per process
    retry_interval_s: float = Field(1.0, gt=0)  # how often a down Redis is probed
    pending_max: int = Field(100_000, ge=0)  # settlements kept while Redis is down

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme = urlsplit(v).scheme
        if scheme not in _SCHEMES:
            raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix:// "
                             f"(got {scheme + '://' if scheme else repr(v)})")
        return v

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")
        if not v or url is None:
            return v
        parts = urlsplit(url)
        if parts.scheme == "unix":
            raise ValueError("a Redis Cluster is reached over TCP: url must be redis:// or "
                             "rediss://, not unix://")
        db = parts.path.strip("/") or dict(parse_qsl(parts.query)).get("db", "0")
        if db != "0":
            raise ValueError(f"a Redis Cluster has only database 0, and url selects "
                             f"database {db}")
        return v

    @field_validator("cluster_nodes")
    @classmethod
    def _cluster_nodes(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if v and not info.data.get("cluster"):
            raise ValueError("cluster_nodes are seeds of a Redis Cluster: set cluster: true")
        for node in v:
            parts = urlsplit(node)
            try:
                port = parts.port
            except ValueError:
                port = None
            if (parts.scheme not in ("redis", "rediss") or not parts.hostname or port is None
                    or parts.username or parts.password or parts.path.strip("/")
                    or parts.query):
                raise ValueError(f"{node!r}: a seed is redis://host:port (credentials, TLS "
                                 f"and the database come from url)")
        return v

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if "{" in v or "}" in v:
            raise ValueError("key_prefix is written inside {...}, the hash tag Redis Cluster "
                             "hashes: a brace in it would change which part of each key is "
                             "hashed")
        return v


class StateConfig(Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisConfig = Field(default_factory=RedisConfig)
    # Redis unreachable: let requests through unguarded (spend is queued and written when it
    # comes back), or refuse them with 503.
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    session_idle_s: float = Field(900, gt=0)  # a session this quiet is "done" for metrics
    session_steps: int = Field(500, ge=1)  # steps kept per session
    max_sessions: int = Field(20_000, ge=1)  # sessions kept, least recently active dropped
    retention_hours: int = Field(24 * 35, ge=1)  # spend buckets kept
    # Redis: each step is written to a file of the worker's own before its answer is
    # released, and recorded from there by the next worker if this one is killed outright.
    write_ahead: bool = True
    write_ahead_dir: str | None = None  # default: <temp dir>/tollway-wal-<port>


class IdentityConfig(Strict):
    # What a key that is not in `agents:` (or no key at all) gets: counted as agent
    # "anonymous", or refused with 401.
    unknown_keys: Literal["anonymous", "reject"] = "anonymous"
    trust_agent_header: bool = False  # honour x-tollway-agent (only names from `agents:`)
    trust_session_header: bool = True  # honour x-tollway-session
    max_tags: int = Field(8, ge=0)
    # Derived sessions follow the conversation: a request continuing an answer is that
    # answer's run, an opening sent again after its run went on is a new run, and content
    # carrying another session's answer links the two (state/lineage.py). What it keeps
    # (digests, never text) lives this long.
    lineage: bool = True
    lineage_window_s: float = Field(3600, gt=0)
    # Keys made at run time through the admin API (`tollway keys`), shared by every replica
    # through the state and refreshed in each process every `runtime_keys_refresh_s`. Off:
    # only the keys of `agents:` are accepted.
    runtime_keys: bool = True
    runtime_keys_refresh_s: float = Field(0.25, gt=0, le=1)
