"""MCP servers over Streamable HTTP: POST/GET/DELETE /mcp/<server> proxied.

The session passes through as the server speaks it: JSON-RPC bodies (one message or a
batch), answers as one JSON body or as an SSE stream (`event: message`, several messages in
one stream: progress notifications before the response), the standalone GET stream, DELETE,
and the `Mcp-Session-Id` / `MCP-Protocol-Version` headers both ways. The caller's virtual
key (Authorization: Bearer / x-api-key) identifies the agent and is never forwarded; the
server's configured `headers:` (its credentials) are added instead.

Two kinds of message are read on the way:

- `tools/call` (tool = params.name, "<server>/<tool>" for policies, key limits, breakers
  and metrics) goes through the tool gate before it is forwarded, and its answer, found in
  the JSON body or in the stream's message with the same id, settles it: a result is `ok`,
  or `tool_error` when it is `isError: true` (a failure for the breaker only with
  `fail_on_error`); a JSON-RPC error from the server is `tool_error` (unknown tool, bad
  arguments: the server refused the call) except -32603 (internal error), a failure; HTTP
  5xx, a transport error, a timeout or a stream that ends without the answer are failures.
  A tool's cost is charged when it answered with a result.
- `tools/list` answers are rewritten to the tools the calling agent may call.

A call the gate refuses is answered at once, HTTP 200, with a JSON-RPC error for its id;
`error.data` is {"tollway_code", "tool", "retry_after_s"?}. While a tool's breaker is open
its configured fallback (a tool of the same server) is called with the same arguments.
JSON-RPC error codes (the implementation-defined server-error range):

    -32050  any other gateway refusal
    -32051  invalid_api_key, key_expired, unknown_agent: who is calling
    -32052  policy_denied: policies, key limits, kill switch, a rejected approval
    -32053  loop_detected: the same call returned the same result N times in the session
    -32054  breaker_open: the tool is failing; data.retry_after_s says when it is retried
    -32055  budget_exceeded, rate_limit_exceeded
    -32056  state_unavailable (fail-closed state)
    -32057  upstream_error: the MCP server is unreachable, dropped the stream or answered 5xx
    -32058  upstream_timeout: the MCP server did not answer within `timeout_s`
    -32059  unknown_mcp_server (HTTP 404)

Errors about the HTTP exchange itself (unknown server, bad key, unreachable server) carry
the same JSON-RPC error body with the HTTP status (404, 401, 502, 504), which MCP clients
surface as the request's error; so do a tool's failures (502, 504), or, once an SSE answer
has begun, an error message as the stream's last event.

The gate's session is the MCP session (`Mcp-Session-Id`, hashed with the server's name) unless
a trusted x-tollway-session names one; 2026-07-28 requests carry no session, so their calls
share the agent's tool session. A client that goes away mid-stream leaves its call settled as
`cancelled`: charged (it was made) but not counted on the breaker. A stream the server closes
to be resumed (SSE polling) keeps its calls open until a GET with Last-Event-ID in the same
session brings the answers, or `timeout_s` passes (a failure). Batches (before 2025-06-18) are
handled message by message: refused calls are answered by the gateway alongside the server's
answers to the rest.
"""

from tollway.tools.mcp.proxy import McpProxy

__all__ = ["McpProxy"]
