"""aiohttp's log of malformed requests, rate-limited.

aiohttp answers a request it cannot parse (a bad request line, CRLF in a header, a bad chunk
size, Content-Length with Transfer-Encoding, a header past its size limit) with a 400, and
logs each one at error level with a traceback. Those are the client's mistakes, or a
scanner's, not the gateway's: one warning line per kind per window is what an operator
needs, with how many more there were. Any other exception aiohttp logs is passed on as it
was, traceback and all, since that one may be a bug.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

WINDOW_S = 10.0


class ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The `logger` a RequestHandler writes to (web.AppRunner(..., logger=...))."""

    def __init__(self, logger: logging.Logger, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logger, {})
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, list[float | int]] = {}  # kind -> [opened at, suppressed]

    def exception(self, msg: object, *args: Any, exc_info: Any = True,
                  **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if not isinstance(exc, HttpProcessingError):
            super().exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        peer = args[0] if args else "?"
        detail = repr(exc.message)[1:-1][:200]  # a header's bytes, say: escaped, bounded
        self.note(type(exc).__name__, f"bad HTTP request from {peer}: {detail} "
                  f"(answered {exc.code or 400})")

    def note(self, kind: str, line: str) -> None:
        """One warning line per kind per window; the next says how many were not logged."""
        now = self.clock()
        window = self._windows.get(kind)
        if window is not None and now - window[0] < self.window_s:
            window[1] += 1
            return
        suppressed = int(window[1]) if window is not None else 0
        self._windows[kind] = [now, 0]
        if suppressed:
            line += f"; {suppressed} more of this kind since the last such line, not logged"
        self.logger.warning(line, extra={"fields": {"kind": kind,
                                                    "suppressed": suppressed}})
