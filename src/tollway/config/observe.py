"""Config of what tollway records about itself: step traces and the audit log."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraceConfig(_Strict):
    # Record each step's prompt (its last message) and completion text with the step (admin
    # API, audit log). Off by default: they are the agents' data.
    content: bool = False
    max_chars: int = Field(4000, ge=1)  # per text


class AuditConfig(_Strict):
    """Steps and admin actions, appended to a hash chain (`tollway audit verify`)."""

    enabled: bool = False
    sink: Literal["file", "redis"] = "file"  # redis: one stream for every replica
    path: str = "audit/tollway-audit.jsonl"  # file sink; relative to the working directory
    max_mb: float = Field(100, gt=0)  # rotate past this size
    keep: int = Field(10, ge=1)  # rotated files kept
    max_len: int = Field(10_000_000, ge=1000)  # redis sink: records kept in the stream
