"""Admin API for runtime virtual keys: create, list, rotate and revoke keys of an agent while
the gateway runs (the records are in tollway.state.keys; requests resolve them through the
key book, tollway.policy.keybook).

A secret is in exactly two answers, the creation's and the rotation's, with
``Cache-Control: no-store``; no listing shows it or its digest, and the audit records name
the key by its id only. After a change this replica reloads its book at once; the others
within identity.runtime_keys_refresh_s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tollway.admin.key_body import read_new_key, read_rotation
from tollway.errors import GatewayError
from tollway.state.base import StateUnavailable
from tollway.state.keys import KeyExists, KeyRecord, KeyRevoked, new_id, new_secret
from tollway.wire import json_response

if TYPE_CHECKING:
    from tollway.gateway import Gateway

log = logging.getLogger("tollway.admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Guarded = Callable[..., Handler]  # guarded(handler, action="read")
# The admin API's audit helper: the request says who did it (the operator) and why.
Record = Callable[[web.Request, dict[str, Any]], None]
NO_STORE = {"Cache-Control": "no-store"}


def _error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    """The admin API's error shape (as admin/api.py answers)."""
    return json_response({"error": {"message": message, "type": "admin_error", "code": code,
                                    "param": param}}, status)


def add_key_routes(app: web.Application, gw: Gateway, guarded: Guarded,
                   record: Record) -> None:
    async def refreshed() -> None:
        """This replica knows of its own change before it answers."""
        try:
            await gw.keys.refresh()
        except StateUnavailable:
            log.warning("runtime keys: changed, but the book could not reload; it will retry")

    async def create(request: web.Request) -> web.Response:
        cfg = gw.config
        try:
            new = await read_new_key(request, cfg.server, set(cfg.agents), cfg.guarded)
        except GatewayError as err:
            return _error(err.status, err.message, err.code, err.param)
        secret, digest = new_secret()
        rec = KeyRecord(id=new_id(), agent=new.agent, digest=digest, created=_now(),
                        expires=new.expires, models=new.models, tools=new.tools,
                        budget_usd_day=new.budget_usd_day, rpm=new.rpm, label=new.label)
        try:
            await gw.state.keys.create(rec)
        except KeyExists:
            return _error(409, "key id collision; try again", "key_exists")
        await refreshed()
        record(request, {"action": "key_create", "key": rec.id, "agent": rec.agent,
                "label": rec.label, "expires": rec.expires,
                "models": list(rec.models) if rec.models is not None else None,
                "tools": list(rec.tools) if rec.tools is not None else None,
                "budget_usd_day": rec.budget_usd_day, "rpm": rec.rpm})
        out = rec.view()
        if not cfg.identity.runtime_keys:
            out["warning"] = ("identity.runtime_keys is off: this gateway does not accept "
                              "runtime keys until it is turned on")
        out["secret"] = secret
        return json_response(out, 201, NO_STORE)

    async def listing(request: web.Request) -> web.Response:
        agent = request.query.get("agent") or None
        recs = await gw.state.keys.list(agent)
        now = _now()
        return json_response({"keys": [r.view(now) for r in recs]})

    async def one(request: web.Request) -> web.Response:
        rec = await gw.state.keys.get(request.match_info["id"])
        if rec is None:
            return _unknown(request)
        return json_response(rec.view())

    async def rotate(request: web.Request) -> web.Response:
        key_id = request.match_info["id"]
        try:
            grace_s = await read_rotation(request, gw.config.server)
        except GatewayError as err:
            return _error(err.status, err.message, err.code, err.param)
        secret, digest = new_secret()
        try:
            rec = await gw.state.keys.rotate(key_id, digest, grace_s, _now())
        except KeyRevoked:
            return _error(409, f"key {key_id} is revoked; create a new one", "key_revoked")
        if rec is None:
            return _unknown(request)
        await refreshed()
        record(request, {"action": "key_rotate", "key": rec.id, "agent": rec.agent,
                "grace_s": grace_s})
        out = rec.view()
        out["secret"] = secret
        return json_response(out, 200, NO_STORE)

    async def revoke(request: web.Request) -> web.Response:
        key_id = request.match_info["id"]
        before = await gw.state.keys.get(key_id)
        if before is None:
            return _unknown(request)
        rec = await gw.state.keys.revoke(key_id, _now())
        if rec is None:
            return _unknown(request)
        await refreshed()
        if before.revoked is None:
            record(request, {"action": "key_revoke", "key": rec.id, "agent": rec.agent,
                    "peer": request.remote})
        return json_response(rec.view())

    app.router.add_post("/admin/keys", guarded(create, "admin"))
    app.router.add_get("/admin/keys", guarded(listing))
    app.router.add_get("/admin/keys/{id}", guarded(one))
    app.router.add_post("/admin/keys/{id}/rotate", guarded(rotate, "admin"))
    app.router.add_post("/admin/keys/{id}/revoke", guarded(revoke, "admin"))
    app.router.add_delete("/admin/keys/{id}", guarded(revoke, "admin"))


def _unknown(request: web.Request) -> web.Response:
    return _error(404, f"no key {request.match_info['id'][:64]!r}", "unknown_key")


def _now() -> float:
    return time.time()
