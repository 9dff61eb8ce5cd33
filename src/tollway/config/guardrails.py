"""Guardrails: which detectors exist (gateway.yaml `guardrails:`) and what the policies do
with what they find (`guardrails:` rules in policies/*.yaml, policy/model.py).

A detector that no rule uses is never built, so one switched off costs nothing.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from tollway.config.base import Strict

Detector = Literal["pii", "secrets", "injection", "custom"]
Where = Literal["prompt", "answer", "tool_args", "tool_results"]
Action = Literal["redact", "block", "flag", "hold"]

DEFAULT_PII = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
               "IP_ADDRESS", "CRYPTO"]


class PiiConfig(Strict):
    # Presidio entity names. Pattern recognizers need no language model; PERSON, LOCATION
    # and NRP need `spacy_model` (an installed spaCy pipeline package, never downloaded).
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_PII))
    # Presidio scores a phone number 0.4 without a language model to read its context
    min_score: float = Field(0.4, ge=0, le=1)
    # Where phone numbers are looked for (each region is a pass of the phone matcher:
    # the most expensive recognizer by far).
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR"])
    spacy_model: str | None = None
    language: str = "en"


class SecretsConfig(Strict):
    # detect-secrets plugins by class name; empty: all but the high-entropy ones.
    plugins: list[str] = Field(default_factory=list)
    # The high-entropy string plugins flag any random-looking quoted string (ids, hashes,
    # nonces): on only when asked.
    entropy: bool = False


class InjectionConfig(Strict):
    # Hosts an answer or a tool result may link or embed images from without being
    # an exfiltration suspect (globs: "*.example.com").
    allowed_hosts: list[str] = Field(default_factory=list)
    # Optionally ask a model under `models:` (OpenAI-compatible chat) whether the text
    # carries instructions for the assistant; past `judge_timeout_ms` the heuristics decide.
    judge: str | None = None
    judge_timeout_ms: float = Field(1500, gt=0)


class CustomConfig(Strict):
    patterns: dict[str, str] = Field(default_factory=dict)  # entity name -> regex
    deny: list[str] = Field(default_factory=list)  # words or phrases, case-insensitive

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"pattern {name!r} does not compile: {e}") from None
        return v


class GuardrailsConfig(Strict):
    pii: PiiConfig = Field(default_factory=PiiConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    injection: InjectionConfig = Field(default_factory=InjectionConfig)
    custom: CustomConfig = Field(default_factory=CustomConfig)
    # Text past this many characters in one place is not scanned (and is flagged
    # `guardrail:unscanned`): a bound on the CPU a single request can take.
    max_chars: int = Field(200_000, ge=1)
    # How many characters of a streamed answer are held back so that something split
    # across events is seen whole before it is written.
    stream_window: int = Field(256, ge=16, le=65536)
