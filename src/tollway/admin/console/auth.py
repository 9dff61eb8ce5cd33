"""Console sessions: a signed cookie, no server-side store, and a CSRF token bound to it.

An operator logs in with their token once; the console then keeps a cookie
`tollway_console` (HttpOnly, SameSite=Strict, Secure behind TLS, Path=/) holding the
operator's name, an expiry and a CSRF nonce, signed with HMAC-SHA256 under a key derived
from that operator's token digest. Every replica and worker can check it with nothing but
the config; changing an operator's token ends their sessions; the token itself is never in
the cookie. Every state-changing request must carry the nonce (the `X-CSRF-Token` header
htmx sends, or a `csrf` form field): a page on another site cannot read it, and
SameSite=Strict already keeps the cookie off cross-site requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import TYPE_CHECKING

import orjson

from tollway.admin.operators import Operator, Operators

if TYPE_CHECKING:
    from aiohttp import web

    from tollway.config.model import Config

COOKIE = "tollway_console"
LIFETIME_S = 8 * 3600
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(cfg: Config, name: str) -> bytes | None:
    """The signing key of an operator's sessions: from their token's digest."""
    if name == "admin" and "admin" not in cfg.operators and cfg.server.admin_key:
        token = cfg.server.admin_key
    elif name in cfg.operators:
        token = cfg.operators[name].token
    else:
        return None
    digest = token[7:] if token.startswith("sha256:") else hashlib.sha256(
        token.encode()).hexdigest()
    return hashlib.sha256(b"tollway-console\0" + digest.encode()).digest()


def issue(cfg: Config, op: Operator) -> tuple[str, str]:
    """(cookie value, CSRF nonce) for a fresh session of this operator."""
    key = _key(cfg, op.name)
    assert key is not None
    nonce = _b64(os.urandom(18))
    body = _b64(orjson.dumps({"n": op.name, "e": int(time.time()) + LIFETIME_S, "c": nonce}))
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}", nonce


def check(cfg: Config, value: str | None) -> tuple[Operator, str] | None:
    """The operator and CSRF nonce of a valid, unexpired session cookie; else None."""
    if not value or "." not in value:
        return None
    body, _, sig = value.partition(".")
    try:
        claims = orjson.loads(_unb64(body))
        name, expires, nonce = str(claims["n"]), int(claims["e"]), str(claims["c"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
    key = _key(cfg, name)
    if key is None or expires < time.time():
        return None
    want = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, sig):
        return None
    role = cfg.operators[name].role if name in cfg.operators else "admin"
    return Operator(name, role), nonce


def login(cfg: Config, token: str) -> Operator | None:
    return Operators.from_config(cfg).authenticate(token)


def csrf_ok(request: web.Request, nonce: str, form_value: str | None) -> bool:
    presented = request.headers.get("X-CSRF-Token") or form_value or ""
    return bool(presented) and hmac.compare_digest(presented, nonce)


def set_cookie(response: web.StreamResponse, value: str, secure: bool) -> None:
    response.set_cookie(COOKIE, value, max_age=LIFETIME_S, path="/", httponly=True,
                        samesite="Strict", secure=secure)


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
