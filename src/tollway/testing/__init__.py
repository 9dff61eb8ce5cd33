"""Test and demo helpers: an in-process fake of the OpenAI and Anthropic APIs.

Exports are resolved lazily so ``python -m tollway.testing.mock_provider`` does not import the
module twice (runpy warns when a package pre-imports the module it is about to run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tollway.testing.mock_provider import (
        MockProvider,
        MockSettings,
        RecordedRequest,
        mock_token_count,
    )

__all__ = ["MockProvider", "MockSettings", "RecordedRequest", "mock_token_count"]


def __getattr__(name: str) -> Any:
    """Import the mock lazily on first attribute access."""
    if name in __all__:
        from tollway.testing import mock_provider

        return getattr(mock_provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
