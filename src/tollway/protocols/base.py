"""What every dialect provides to the stages: endpoints, errors, usage and stream observation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tollway.errors import GatewayError
from tollway.exchange import Usage
from tollway.protocols.answers import ToolCallCapture
from tollway.protocols.sse import TextCapture


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # chat, completions, embeddings, responses, messages, count_tokens
    path: str  # below the API root, e.g. "/chat/completions"
    dialect: Dialect
    billable: bool = True  # count_tokens is free
    streams: bool = True


class StreamObserver(Protocol):
    """Reads the complete SSE events of each network chunk; may rewrite or drop some."""

    usage: Usage | None
    usage_final: bool  # the usage is the upstream's last word, not a partial one
    saw_content: bool  # set once the first content-bearing event went by
    finished: bool  # the stream's own terminal event went by
    bad_usage: bool  # the upstream sent a usage that is not a set of token counts
    response_id: str | None  # Responses: the id a next call names as previous_response_id

    capture: TextCapture  # the generated text so far (escaped), and its size
    calls: ToolCallCapture | None  # names of the tool calls started so far, when asked

    def text(self) -> str:
        """The generated text so far, to count when no usage arrived."""
        ...

    def feed(self, blob: bytes) -> bytes:
        """Observe a blob of whole events; return what the client should get."""
        ...


class Dialect(Protocol):
    name: str

    def validate(self, endpoint: str, body: dict[str, Any]) -> None:
        """A 400 GatewayError naming the first field the gateway reads that has the wrong
        type (protocols/inputs/): runs once, at parse, on every request."""
        ...

    def error_body(self, err: GatewayError) -> bytes: ...

    def stream_error(self, err: GatewayError) -> bytes: ...

    def usage(self, endpoint: Endpoint, body: dict[str, Any]) -> Usage | None: ...

    def observer(self, endpoint: Endpoint, strip_usage: bool, tools: bool = False,
                 ) -> StreamObserver:
        """`tools`: also note the names of the tool calls the stream starts."""
        ...

    def prompt(self, endpoint: Endpoint, body: dict[str, Any]) -> tuple[list[Any], list[str]]:
        """The messages to count one by one, and loose text (system, tools, prompt)."""
        ...

    def session_seed(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes: ...


ERROR_TYPES_OPENAI = {
    400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
    403: "permission_error", 404: "invalid_request_error", 408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
    502: "upstream_error", 503: "service_unavailable", 504: "timeout_error",
}
ERROR_TYPES_ANTHROPIC = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error", 429: "rate_limit_error", 500: "api_error",
    502: "api_error", 503: "overloaded_error", 504: "timeout_error",
}
