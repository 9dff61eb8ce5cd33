"""The Bedrock Converse side of the mock provider, written from the Converse API reference:
`POST /model/{modelId}/converse` and `/converse-stream`, a SigV4 `Authorization` header
(its shape and key id checked, as a service would before the signature), `ConverseResponse`
bodies, ConverseStream as a binary AWS event stream (each frame with its prelude and
message CRC32s, so botocore's parser checks them), and `{"message": ...}` errors with
`x-amzn-ErrorType`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tollway.testing.mock_common import Turn, mock_token_count, split_pieces

PREFIX = "/model/"
ACCESS_KEY = "AKIAMOCKBEDROCK00001"  # what tests put in AWS_ACCESS_KEY_ID
SECRET_KEY = "mock-secret-access-key-0000000000000000"  # and in AWS_SECRET_ACCESS_KEY
TYPES = {400: "ValidationException", 403: "AccessDeniedException",
         404: "ResourceNotFoundException", 429: "ThrottlingException",
         500: "InternalServerException", 503: "ServiceUnavailableException"}


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   ) -> web.Response:
    kind = TYPES.get(status, "InternalServerException")
    return web.Response(status=status, body=orjson.dumps({"message": message}),
                        content_type="application/json",
                        headers={**(headers or {}), "x-amzn-ErrorType": f"{kind}:http://"})


def is_bedrock(path: str) -> bool:
    return path.startswith(PREFIX) and path.endswith(("/converse", "/converse-stream"))


def model_of(path: str) -> str:
    return path[len(PREFIX):].rsplit("/", 1)[0]


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths, CRC), string headers, payload, CRC."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v
    total = 12 + len(raw) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack("!I", zlib.crc32(body))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json",
                  ":message-type": "event"}, orjson.dumps(payload))


def signed(request: web.Request, body: bytes) -> bool:
    """The SigV4 signature recomputed from what arrived (the path as sent, the headers it
    names, the exact body bytes) with the mock's secret, as the service does."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = request.headers.get("Authorization", "")
    date = request.headers.get("X-Amz-Date", "")
    if not auth.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/") or not date:
        return False
    try:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        names = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        given = auth.split("Signature=", 1)[1].strip()
    except IndexError:
        return False
    region, service = scope[2], scope[3]
    url = f"http://{request.host}{request.raw_path}"
    headers = {n: request.headers.get(n, "") for n in names}
    probe = AWSRequest(method=request.method, url=url, data=body, headers=headers)
    probe.context["timestamp"] = date
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, region)
    canonical = signer.canonical_request(probe)
    return signer.signature(signer.string_to_sign(probe, canonical), probe) == given


async def handle(turn: Turn) -> web.StreamResponse:
    if not signed(turn.request, await turn.request.read()):
        return error_response(403, "The request signature we calculated does not match "
                              "the signature you provided", turn.extra_headers())
    body = turn.body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "messages must not be empty", turn.extra_headers())
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    text_in = " ".join(b.get("text", "") for b in last.get("content") or ()
                       if isinstance(b, dict) and isinstance(b.get("text"), str))
    prompt = max(1, sum(mock_token_count(b.get("text", "")) for m in messages
                        if isinstance(m, dict) for b in m.get("content") or ()
                        if isinstance(b, dict) and isinstance(b.get("text"), str)))
    tool = _tool(body, last)
    if tool is not None:
        args = orjson.loads(turn.tool_arguments(text_in))
        content: list[dict[str, Any]] = [{"toolUse": {"toolUseId": f"tooluse_{turn.seq}",
                                                      "name": tool, "input": args}}]
        out_tokens, stop = mock_token_count(orjson.dumps(args).decode()), "tool_use"
    else:
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        reply, cut = turn.reply(text_in, limit)
        content = [{"text": reply}]
        out_tokens, stop = mock_token_count(reply), "max_tokens" if cut else "end_turn"
    usage = {"inputTokens": prompt, "outputTokens": out_tokens,
             "totalTokens": prompt + out_tokens}
    if not turn.request.path.endswith("/converse-stream"):
        return turn.json({"output": {"message": {"role": "assistant", "content": content}},
                          "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}})
    resp = web.StreamResponse(headers={"content-type": "application/vnd.amazon.eventstream",
                                       **turn.extra_headers()})
    await resp.prepare(turn.request)
    for i, chunk in enumerate(_frames(content, stop, usage, turn.chunks)):
        if turn.disconnect_after is not None and i >= turn.disconnect_after:
            transport = turn.request.transport
            if transport is not None:
                transport.close()
            return resp
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _frames(content: list[dict[str, Any]], stop: str, usage: dict[str, Any], chunks: int,
            ) -> Iterator[bytes]:
    yield event("messageStart", {"role": "assistant"})
    block = content[0]
    use = block.get("toolUse")
    if use is not None:
        yield event("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {
            "toolUseId": use["toolUseId"], "name": use["name"]}}})
        raw = orjson.dumps(use["input"]).decode()
        half = len(raw) // 2
        for piece in (raw[:half], raw[half:]):
            yield event("contentBlockDelta", {"contentBlockIndex": 0,
                                              "delta": {"toolUse": {"input": piece}}})
    else:
        for piece in split_pieces(block["text"], chunks):
            yield event("contentBlockDelta", {"contentBlockIndex": 0,
                                              "delta": {"text": piece}})
    yield event("contentBlockStop", {"contentBlockIndex": 0})
    yield event("messageStop", {"stopReason": stop})
    yield event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})


def _tool(body: dict[str, Any], last: dict[str, Any]) -> str | None:
    config = body.get("toolConfig") or {}
    specs = [t.get("toolSpec") for t in config.get("tools") or () if isinstance(t, dict)]
    names = [s.get("name") for s in specs if isinstance(s, dict)]
    if not names:
        return None
    choice = config.get("toolChoice") or {}
    if "tool" in choice:
        return str(choice["tool"].get("name"))
    if any(isinstance(b, dict) and "toolResult" in b for b in last.get("content") or ()):
        return None
    return str(names[0])
