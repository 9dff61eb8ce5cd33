"""HTTP tools: ANY /tools/<tool>/<path...> proxied to the tool's configured URL.

`/tools/weather/v1/forecast?city=Rome` goes to `<url of weather>/v1/forecast?city=Rome` with
the method, the query (byte for byte), the body and the end-to-end headers intact. Dropped on
the way up: hop-by-hop headers (and those the Connection header names), Host and
Content-Length (recomputed), the caller's Authorization and x-api-key (tollway virtual keys,
never the tool's) and every x-tollway-* header; the tool's configured `headers` (its
credentials) are added. Dropped on the way back: hop-by-hop headers and any x-tollway-*
header the tool sent; bodies are passed through untouched (no decompression).

Every call goes through the tool gate (key limits, policies, loops, the breaker, budgets,
approvals) before it is made and is settled on it after, exactly once, even when the client
goes away mid-stream; a call that was never made is released instead.

Request bodies up to 1 MiB are read whole: they are part of the call's digest (the loop
detector's "same arguments") and may be sent again on a retry. Larger or chunked bodies are
streamed up as they arrive: their digest covers only the method, path and query, and they
are never retried. `max_body_mb` is enforced either way (413).

Response bodies with a known length up to 1 MiB are read whole: the call is settled (its
result digest noted for the loop detector, its outcome on the breaker, its cost) before the
client gets the answer, so an agent's next call always sees this one. Others (SSE, chunked,
big downloads) are streamed chunk by chunk and settled before the end of the stream; their
result digest is taken if the whole body was at most 1 MiB.

Outcomes on the breaker: a transport error, a timeout or a 5xx is always a failure; so is a
429 (the tool is overloaded, not answering the call), whose Retry-After, like a 503's, keeps
the breaker open at least that long; any other 4xx is the tool's own answer (`tool_error`)
unless the tool has `fail_on_4xx: true`. Idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE)
with a body read whole are tried again up to `retries` times on a transport error, a timeout
or a 5xx without Retry-After, before anything reached the caller; the breaker, the metrics
and the spend see the call once, with its final outcome.

While a tool's breaker is open, its `fallback` (and the fallback's, in turn) is called with
the same method, path, query and body; the answer names the tool that gave it
(x-tollway-tool) and the one it stands in for (x-tollway-fallback). Without one (or when every
fallback is open too, or not one the caller may use) the caller gets 503 `breaker_open` with
Retry-After. TRACE and CONNECT are refused (a TRACE would echo the tool's credentials back),
as are paths with '.' or '..' segments (they would climb out of the tool's URL).
"""

from tollway.tools.http.proxy import HttpTools

__all__ = ["HttpTools"]
