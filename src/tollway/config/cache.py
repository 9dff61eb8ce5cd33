"""The response caches: exact (same request) and semantic (same meaning of the last turn)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tollway.config.base import Strict


class ExactCacheConfig(Strict):
    enabled: bool = False
    ttl_s: float = Field(3600, gt=0)
    # Whose answers a request may reuse: the same agent's, the same team's, or anyone's.
    scope: Literal["agent", "team", "global"] = "agent"
    # deterministic: only requests with temperature 0 (or the x-tollway-cache: store header);
    # always: every successful answer.
    when: Literal["deterministic", "always"] = "deterministic"
    max_entries: int = Field(10_000, ge=1)  # memory state; Redis bounds entries by TTL
    max_entry_kb: int = Field(512, ge=1)  # larger answers are not stored


class SemanticCacheConfig(Strict):
    """Answers a request whose last user turn means the same as a stored one's, within a
    partition where everything else (scope, model, system prompt, earlier turns, tools,
    parameters) is identical. Opt-in per model (`semantic_cache: true`) or routing rule."""

    enabled: bool = False
    # Cosine over the last user turn. 0.87 is tuned for the local embedder (0 false hits on
    # the hard-negative set); a provider's embedding model needs its own.
    threshold: float = Field(0.87, gt=0, le=1)
    scope: Literal["agent", "team", "global"] = "agent"
    when: Literal["deterministic", "always"] = "deterministic"
    ttl_s: float = Field(3600, gt=0)  # a model's cache_ttl_s overrides it
    # "local": WordLlama, in-process, weights from the wheel. Otherwise the name of an
    # embeddings model under `models:` (an OpenAI-compatible /v1/embeddings: OpenAI, TEI, Ollama).
    embedder: str = "local"
    dims: int | None = Field(None, ge=1)  # a model embedder's width (sent as `dimensions`)
    timeout_ms: float = Field(50, gt=0)  # embedding + search past this is a miss, not a wait
    batch_size: int = Field(32, ge=1)  # texts per call to a model embedder
    batch_ms: float = Field(2, ge=0)  # how long a text waits for others to share its call
    max_vectors: int = Field(100_000, ge=1)  # per process; the least recently added go first
    max_text_chars: int = Field(4000, ge=1)  # a longer last turn is not compared
    max_pending: int = Field(64, ge=1)  # embeddings queued past this: a miss, not a queue


class CacheConfig(Strict):
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)

    @property
    def enabled(self) -> bool:
        return self.exact.enabled or self.semantic.enabled
