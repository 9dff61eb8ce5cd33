"""Who is asking the admin API, and whether their role lets them: operator authentication
for every /admin/ route, and the reason an operator gives for an action.

An operator is found either by the bearer token of the request (Authorization: Bearer, or
x-api-key, as the SDKs send keys) or from `request[OPERATOR]` (or `request["operator"]`),
which a console middleware sets from its session cookie before the handler runs. The
operators are built from the config the gateway runs now, once per config object: a reload
that changes `operators:` takes effect on the next request, with nothing to invalidate by
hand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tollway.admin.operators import NEEDS, Operator, Operators
from tollway.errors import GatewayError
from tollway.ingress.body import read_body
from tollway.protocols.inputs import wrong_type
from tollway.wire import json_response

if TYPE_CHECKING:
    from tollway.config.model import Config
    from tollway.gateway import Gateway

# Where the request's Operator is kept: the console's middleware sets it (or the plain
# "operator" key) from its session; the gate sets it from a token.
OPERATOR = web.RequestKey("operator", Operator)
MAX_REASON = 500  # characters of a reason kept in the audit record


def admin_error(status: int, message: str, code: str) -> web.Response:
    """The admin API's error shape (the same as OpenAI's, with type admin_error)."""
    return json_response({"error": {"message": message, "type": "admin_error", "code": code,
                                    "param": None}}, status)


def presented_token(request: web.Request) -> str:
    """The bearer token in Authorization, else x-api-key; "" when neither is there."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def operator_of(request: web.Request) -> Operator | None:
    """The operator this request was admitted as (None before the gate ran)."""
    op = request.get(OPERATOR) or request.get("operator")
    return op if isinstance(op, Operator) else None


class AdminGate:
    """Operator authentication and the role check, against the gateway's current config."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._built_for: Config | None = None
        self._operators = Operators({})

    def operators(self) -> Operators:
        """The operators of the running config; rebuilt when a reload swapped it."""
        cfg = self._gw.config
        if cfg is not self._built_for:
            self._operators = Operators.from_config(cfg)
            self._built_for = cfg
        return self._operators

    def admit(self, request: web.Request, action: str) -> web.Response | None:
        """None when the request's operator may do `action`; the refusal otherwise: 403
        admin_closed with no operator configured at all, 401 without a valid token, 403
        admin_forbidden naming the role needed when the operator's is too low."""
        op = operator_of(request)  # set by the console from its session, if it ran
        if op is None:
            known = self.operators()
            if not known:  # closed: any local process (an agent on the same host too) is
                # no admin
                return admin_error(403, "the admin API is closed: no operators and no "
                                   "server.admin_key are configured", "admin_closed")
            op = known.authenticate(presented_token(request))
            if op is None:
                return admin_error(401, "the admin API needs an operator's token or the admin "
                                   "key (Authorization: Bearer ...)", "admin_unauthorized")
            request[OPERATOR] = op
        if not op.can(action):
            needed = NEEDS[action]
            return admin_error(403, f"operator {op.name!r} has the {op.role} role; this "
                               f"needs the {needed} role", "admin_forbidden")
        return None


async def reason_of(request: web.Request, max_body_bytes: int) -> str | None:
    """The reason an operator gives for an action: `?reason=`, else "reason" in a JSON
    object body. An empty body gives none; a body that is not such an object is a 400
    (GatewayError), so that a reason meant for the audit is never silently dropped."""
    reason: object = request.query.get("reason")
    if not reason and request.can_read_body:
        raw = await read_body(request, max_body_bytes)
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise GatewayError(400, "bad_body", 'the body must be JSON: {"reason": '
                                   '"..."} (or none)') from exc
            if not isinstance(body, dict):
                raise GatewayError(400, "bad_body", 'the body must be a JSON object: '
                                   '{"reason": "..."} (or none)')
            reason = body.get("reason")
            if reason is not None and not isinstance(reason, str):
                err = wrong_type("reason", "a string", reason)
                raise GatewayError(400, "bad_body", err.message, param="reason")
    return str(reason)[:MAX_REASON] if reason else None
