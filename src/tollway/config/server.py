"""The process-level sections of gateway.yaml: server, state (memory or Redis) and identity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tollway.config.base import Strict, check_key


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
    # Empty: the admin API answers loopback clients only. Plain or "sha256:<hex>".
    admin_key: str | None = Field(None, repr=False)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    watch_interval_s: float = Field(2.0, ge=0)  # how often the config file is checked; 0: off
    # Processes serving the port (SO_REUSEPORT); more than 1 needs state.backend: redis.
    workers: int = Field(1, ge=1)

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, v: str | None) -> str | None:
        if v:
            check_key(v)
        return v or None


class RedisConfig(Strict):
    url: str = Field("redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    # Every key starts with "{prefix}": one hash tag, so a Redis Cluster keeps the keys one
    # request touches in one slot and the guard scripts stay atomic.
    key_prefix: str = "tollway"
    timeout_ms: int = Field(250, ge=10)  # per command; past it the state counts as down
    max_connections: int = Field(64, ge=1)
    retry_interval_s: float = Field(1.0, gt=0)  # how often a down Redis is probed
    pending_max: int = Field(100_000, ge=0)  # settlements kept while Redis is down


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


class IdentityConfig(Strict):
    # What a key that is not in `agents:` (or no key at all) gets: counted as agent
    # "anonymous", or refused with 401.
    unknown_keys: Literal["anonymous", "reject"] = "anonymous"
    trust_agent_header: bool = False  # honour x-tollway-agent (only names from `agents:`)
    trust_session_header: bool = True  # honour x-tollway-session
    max_tags: int = Field(8, ge=0)
