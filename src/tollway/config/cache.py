"""The response caches: exact (same request) and semantic (same meaning of the last turn)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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


class SemanticJudgeConfig(Strict):
    """What compares a fresh answer with the stored one when the cache explores."""

    # exact: equal once normalised (case, spacing, JSON canonical); embedding: the answers
    # embed at or above `threshold`; model: ask `model` (an OpenAI-compatible chat model
    # under `models:`) whether they agree.
    kind: Literal["exact", "embedding", "model"] = "exact"
    threshold: float = Field(0.95, gt=0, le=1)  # embedding
    model: str | None = None  # model

    @model_validator(mode="after")
    def _model(self) -> SemanticJudgeConfig:
        if self.kind == "model" and not self.model:
            raise ValueError("judge kind `model` needs `model`, a model under `models:`")
        return self


class SemanticOptIn(Strict):
    """`semantic_cache:` of a model or routing rule, when it sets its own error bound."""

    max_error_rate: float = Field(gt=0, lt=1)


class SemanticCacheConfig(Strict):
    """Answers a request whose last user turn means the same as a stored one's, within a
    partition where everything else (scope, model, system prompt, earlier turns, tools,
    parameters) is identical. Opt-in per model (`semantic_cache: true`) or routing rule.
    A stored answer is served only when the cache estimates, from its own judged traffic,
    that at most `max_error_rate` of what it serves is wrong (cache/semantic/evidence.py)."""

    enabled: bool = False

    # The share of served answers that may be wrong, at 99% confidence; a model's or rule's
    # `semantic_cache: {max_error_rate: ...}` overrides it.
    max_error_rate: float = Field(0.01, gt=0, lt=1)
    # Candidates less similar than this are plain misses, never judged.
    min_similarity: float = Field(0.8, gt=0, le=1)
    # A fixed cosine threshold instead of the learned one (no error bound): the old way.
    threshold: float | None = Field(None, gt=0, le=1)
    judge: SemanticJudgeConfig = Field(default_factory=SemanticJudgeConfig)
    # The near-miss guards (numbers, negations, quotes, names... differ: refused before any
    # decision). auto: on with a fixed threshold (they are its only protection), off with
    # the learned bound, where on public labelled pairs they lowered the recall reachable at
    # equal error (bench/semantic_eval.py --ablation) and the judge catches what they would.
    guards: Literal["auto", "on", "off"] = "auto"
    # Share of would-be hits forwarded and judged anyway: 3/sqrt(n) after n verdicts, never
    # below explore_min.
    explore_min: float = Field(0.02, ge=0, le=1)
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

    @property
    def guarded(self) -> bool:
        return self.guards == "on" or (self.guards == "auto" and self.threshold is not None)


class CacheConfig(Strict):
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)

    @property
    def enabled(self) -> bool:
        return self.exact.enabled or self.semantic.enabled
