"""Token counts read from an upstream's usage, checked: the ledger must never take a count an
upstream got wrong (a string, a negative number, cached tokens beyond the prompt) for money.

A usage that fails the check is not used at all: the request is priced from the tokens the
gateway counted itself, and its step carries the flag `usage_invalid`.
"""

from __future__ import annotations

from typing import Any

MAX_TOKENS = 100_000_000  # beyond any context window: a count above it is not a count


class BadUsage(ValueError):
    """The upstream's usage is not a set of plausible, non-negative token counts."""


def tokens(value: Any) -> int:
    """A token count: a non-negative int; absent (None) is 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise BadUsage(f"not a token count: {value!r}")
    return value


def detail(usage: dict[str, Any], group: str, field: str) -> int:
    """A count inside a details object (prompt_tokens_details.cached_tokens, say)."""
    inner = usage.get(group)
    if inner is None:
        return 0
    if not isinstance(inner, dict):
        raise BadUsage(f"{group} is not an object")
    return tokens(inner.get(field))


def uncached(total: int, cached: int) -> int:
    """The input not read from the provider's cache; cached beyond the total is wrong."""
    if cached > total:
        raise BadUsage(f"{cached} cached tokens of {total}")
    return total - cached
