"""An exact-cache hit's body: a fresh id on every hit, zero billed tokens, never the mark
the template uses, and a bounded memo of templates."""

from __future__ import annotations

import re

import orjson

from tollway.cache import exact
from tollway.cache.exact import Entry

STREAM = b"".join(
    b"data: " + orjson.dumps({"id": "chatcmpl-abc", "object": "chat.completion.chunk",
                              "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]})
    + b"\n\n" for i in range(20)) + (
    b'data: {"id":"chatcmpl-abc","choices":[],"usage":{"prompt_tokens":2023,'
    b'"completion_tokens":128,"total_tokens":2151}}\n\ndata: [DONE]\n\n')


def test_every_hit_gets_its_own_id_and_no_billed_tokens() -> None:
    entry = Entry(200, "text/event-stream", 0.1, {}, STREAM)
    first, second = entry.served(), Entry(200, "", 0.1, {}, bytes(bytearray(STREAM))).served()
    for body in (first, second):
        ids = set(re.findall(rb'"id":"([^"]+)"', body))
        assert len(ids) == 1 and next(iter(ids)).startswith(b"chatcmpl-cache")
        assert b'"prompt_tokens":0' in body and b'"completion_tokens":0' in body
        assert b"\x00" not in body
        assert body.count(b"\n\n") == STREAM.count(b"\n\n")
    assert first != second  # the second hit (another bytes object, as Redis returns) too


def test_the_memo_of_templates_stays_bounded() -> None:
    for i in range(exact._TEMPLATES + 50):
        Entry(200, "", 0.0, {}, b'{"id":"chatcmpl-%d","usage":{"total_tokens":3}}' % i).served()
    assert len(exact._templates) <= exact._TEMPLATES
    big = b'{"id":"chatcmpl-x","pad":"' + b"a" * (exact._TEMPLATE_MAX_BYTES + 1) + b'"}'
    assert b"chatcmpl-cache" in Entry(200, "", 0.0, {}, big).served()
    assert big not in exact._templates
