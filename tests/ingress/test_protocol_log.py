"""aiohttp's malformed-request log: one warning line per kind per window, then one that says
how many were left out; anything that is not a malformed request keeps its traceback."""

from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from tollway.ingress.protocol_log import ProtocolLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_window_then_the_count(caplog: pytest.LogCaptureFixture,
                                                    ) -> None:
    clock = Clock()
    plog = ProtocolLog(logging.getLogger("aiohttp.server"), window_s=10, clock=clock)
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        plog.exception("Error handling request from %s", "10.0.0.7",
                       exc_info=BadHttpMessage("Invalid header value char"))
    plog.exception("Error handling request from %s", "10.0.0.7",
                   exc_info=LineTooLong("a header", "8190"))
    assert [(r.levelno, r.fields["kind"]) for r in caplog.records] == [  # type: ignore[attr-defined]
        (logging.WARNING, "BadHttpMessage"), (logging.WARNING, "LineTooLong")]
    assert "10.0.0.7" in caplog.records[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    caplog.clear()
    clock.now += 9.9
    plog.exception("Error handling request from %s", "10.0.0.8",
                   exc_info=BadHttpMessage("again"))
    assert not caplog.records  # still the same window
    clock.now += 0.2
    plog.exception("Error handling request from %s", "10.0.0.9",
                   exc_info=BadHttpMessage("b'\\r\\nX-Injected: yes'"))
    (line,) = caplog.records
    assert line.fields["suppressed"] == 5  # type: ignore[attr-defined]
    assert "5 more of this kind" in line.getMessage()
    assert "\n" not in line.getMessage() and "\r" not in line.getMessage()


def test_other_exceptions_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    plog = ProtocolLog(logging.getLogger("aiohttp.server"))
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        plog.exception("Error handling request from %s", "10.0.0.7", exc_info=exc)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info
