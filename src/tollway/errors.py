"""Errors a stage raises; the dialect of the endpoint renders them for the client."""

from __future__ import annotations


class GatewayError(Exception):
    """A refusal or failure the client must see, with a status its SDK reacts to correctly."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}


def bad_request(message: str, code: str = "invalid_request", param: str | None = None,
                ) -> GatewayError:
    return GatewayError(400, code, message, param=param)
