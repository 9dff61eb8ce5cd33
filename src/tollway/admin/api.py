"""Admin API: spend, sessions and their steps, flags, approvals, reloads and purges, each
behind the role it needs (admin/auth.py). Never shows a key or a secret."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tollway.admin.auth import AdminGate, admin_error, operator_of, reason_of
from tollway.admin.decision import read_decision
from tollway.admin.keys import add_key_routes
from tollway.errors import GatewayError
from tollway.ingress.safety import last_resort
from tollway.state.base import StateUnavailable
from tollway.state.records import SPEND_DIMENSIONS
from tollway.wire import json_response

if TYPE_CHECKING:
    from tollway.gateway import Gateway


log = logging.getLogger("tollway.admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_error = admin_error


def _failed(request: web.Request, err: GatewayError) -> web.Response:
    """The last resort's 500, in the admin API's shape, with its request id."""
    response = _error(err.status, err.message, err.code)
    response.headers.update(err.headers)
    return response


def parse_since(value: str | None) -> float | None:
    """Unix seconds, an ISO-8601 time, or a duration back from now: 90s, 15m, 24h, 7d."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return _finite(time.time() - float(value[:-1]) * units[value[-1]], value)
    try:
        return _finite(float(value), value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"since={value!r} is neither unix seconds, ISO-8601 nor a duration "
                         "like 24h") from exc
    return dt.timestamp()


def _finite(seconds: float, value: str) -> float:
    """A time the ledgers can bucket: not nan, not infinite."""
    if not math.isfinite(seconds):
        raise ValueError(f"since={value!r} is not a time")
    return seconds


def add_admin_routes(app: web.Application, gw: Gateway) -> None:
    """Every /admin/... route on `app`: the admin listener's app, or the main one when the
    admin listener is off (compatibility)."""
    gate = AdminGate(gw)

    def record(fields: dict[str, Any]) -> None:
        """Admin actions are logged and, with an audit sink, appended to the audit chain."""
        log.warning("admin action", extra={"fields": fields})
        if gw.audit is not None:
            gw.audit.append("admin", fields)

    def guarded(handler: Handler, action: str = "read") -> Handler:
        """The handler behind operator authentication: `action` is what it does ("read",
        "approve" or "admin"), and the operator's role must allow it."""
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = gate.admit(request, action)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except GatewayError as err:  # a body too slow, too large or malformed
                return _failed(request, err)
            except StateUnavailable:  # Redis unreachable: the answer is "not now", not a 500
                resp = _error(503, "the shared state (Redis) is unreachable; try again "
                              "shortly", "state_unavailable")
                resp.headers["Retry-After"] = "1"
                return resp
        return last_resort(checked, _failed)

    def acted(request: web.Request, fields: dict[str, Any], reason: str | None) -> None:
        """Record an admin action with the operator who did it and the reason they gave
        (their name, never their token)."""
        op = operator_of(request)
        record({**fields, "operator": op.name if op else None, "reason": reason,
                "peer": request.remote})

    def why(request: web.Request) -> Awaitable[str | None]:
        return reason_of(request, int(gw.config.server.max_body_mb * 2**20))

    async def spend(request: web.Request) -> web.Response:
        by = request.query.get("by", "agent")
        if by not in (*SPEND_DIMENSIONS, "tool"):
            return _error(400, f"by must be one of {', '.join(SPEND_DIMENSIONS)}, tool",
                          "bad_by")
        try:
            since = parse_since(request.query.get("since"))
        except ValueError as exc:
            return _error(400, str(exc), "bad_since")
        rows = await gw.state.ledger.spend("model" if by == "tool" else by, since)
        if by in ("model", "tool"):  # a tool call's step names the tool as its model
            cfg = gw.config
            tools = set(cfg.tools)
            servers = set(cfg.mcp_servers)
            rows = [r for r in rows if (r.key in tools or r.key.split("/", 1)[0] in servers)
                    is (by == "tool")]
        total = sum(r.cost_usd for r in rows)
        return json_response({"by": by, "since": since, "total_cost_usd": round(total, 10),
                              "rows": [r.to_dict() for r in rows]})

    async def session(request: web.Request) -> web.Response:
        sid = request.match_info["session"]
        view = await gw.state.ledger.session(sid)
        if view is None:
            return _error(404, f"no session {sid!r}", "session_not_found")
        return json_response(view)

    async def sessions(request: web.Request) -> web.Response:
        try:
            since = parse_since(request.query.get("since"))
            limit = int(request.query.get("limit", "50"))
        except ValueError as exc:
            return _error(400, str(exc), "bad_query")
        if not 0 <= limit <= 10_000:
            return _error(400, "limit must be between 0 and 10000", "bad_query")
        rows = await gw.state.ledger.sessions(agent=request.query.get("agent"), since=since,
                                       sort=request.query.get("sort", "cost"), limit=limit)
        return json_response({"sessions": rows})

    async def set_flag(request: web.Request) -> web.Response:
        kind = "session" if request.path.startswith("/admin/sessions/") else "agent"
        name = request.match_info["name"]
        action = request.match_info["action"]
        on = action in ("kill", "pause")
        if (kind, action) not in (("session", "kill"), ("session", "revive"),
                                  ("agent", "pause"), ("agent", "resume")):
            return _error(404, f"no action {action!r} for a {kind}", "unknown_action")
        reason = await why(request)
        await gw.state.flags.set(kind, name, on)
        acted(request, {"action": action, kind: name}, reason)
        return json_response({kind: name, "action": action, "denied": on})

    async def flags(request: web.Request) -> web.Response:
        return json_response(await gw.state.flags.all())

    async def reload(request: web.Request) -> web.Response:
        reason = await why(request)
        result = await gw.reload("admin API")
        acted(request, {"action": "reload", "result": result["result"]}, reason)
        return json_response(result, 200 if result["result"] == "ok" else 400)

    async def breakers(request: web.Request) -> web.Response:
        views = await gw.state.breakers.views()
        return json_response({"breakers": [v.to_dict() for v in views.values()]})

    async def purge(request: web.Request) -> web.Response:
        scope = request.query.get("scope") or "*"  # agent=<name> | team=<name> | global
        model = request.query.get("model") or "*"
        for value in (scope, model):
            if value != "*" and any(ch in value for ch in "*?[]"):
                return _error(400, "scope and model are names, not patterns", "bad_purge")
        reason = await why(request)
        gone = await gw.state.cache.purge(f"c:{scope}:{model}:*")
        gone += await gw.state.cache.purge(f"s:{scope}:{model}:*")
        if gw.semantic is not None:
            gw.semantic.purge(scope, model)
        acted(request, {"action": "cache_purge", "scope": scope, "model": model,
                        "entries": gone}, reason)
        return json_response({"purged": gone, "scope": scope, "model": model})

    async def semantic(request: web.Request) -> web.Response:
        """What the semantic cache learned: per model, its threshold and the verdicts under
        it; per entry (?entries=N, ?judged=1 for those with verdicts), its evidence."""
        sem = gw.semantic
        if sem is None:
            return _error(404, "the semantic cache is not enabled", "semantic_cache_off")
        try:
            limit = min(1000, max(0, int(request.query.get("entries", "0"))))
        except ValueError:
            return _error(400, "entries= is a number", "bad_query")
        return json_response({
            "max_error_rate": sem.cfg.max_error_rate, "fixed_threshold": sem.cfg.threshold,
            "judge": sem.cfg.judge.kind, "size": sem.size, "models": sem.learner.summary(),
            "entries": sem.views(limit, request.query.get("judged") == "1")})

    async def approvals(request: web.Request) -> web.Response:
        found = await gw.state.tools.approvals()
        status = request.query.get("status")
        rows = [a.to_dict() for a in found]
        if status:
            rows = [r for r in rows if r["status"] == status]
        return json_response({"approvals": rows})

    async def decide(request: web.Request) -> web.Response:
        try:
            body = await read_decision(request, gw.config.server)
        except GatewayError as err:
            return _error(err.status, err.message, err.code)
        decision = body["decision"]
        reason = body.get("reason") or request.query.get("reason")
        op = operator_of(request)
        by = str(body.get("by") or (op.name if op else f"admin@{request.remote}"))[:64]
        approval_id = request.match_info["id"]
        found = await gw.state.tools.approval_decide(
            approval_id, decision == "approve", by, str(reason)[:500] if reason else None)
        if found is None:
            return _error(404, f"no approval {approval_id!r}", "unknown_approval")
        d = found.to_dict()
        wanted = "approved" if decision == "approve" else "rejected"
        if d["status"] != wanted:
            return _error(409, f"approval {approval_id} is already {d['status']}",
                          "already_decided")
        gw.approvals.wake(approval_id)  # a call this process holds goes on at once
        acted(request, {"action": "approval", "approval": approval_id,
                        "decision": d["status"], "tool": d["tool"], "agent": d["agent"],
                        "by": by}, str(reason)[:500] if reason else None)
        return json_response(d)

    # Reads need a viewer, deciding approvals an approver, anything else that changes
    # state an admin.
    add_key_routes(app, gw, guarded, lambda request, fields: acted(
        request, fields, (request.query.get("reason") or "")[:500] or None))
    app.router.add_get("/admin/approvals", guarded(approvals))
    app.router.add_post("/admin/approvals/{id}", guarded(decide, "approve"))
    app.router.add_post("/admin/sessions/{name}/{action}", guarded(set_flag, "admin"))
    app.router.add_post("/admin/agents/{name}/{action}", guarded(set_flag, "admin"))
    app.router.add_post("/admin/cache/purge", guarded(purge, "admin"))
    app.router.add_get("/admin/cache/semantic", guarded(semantic))
    app.router.add_get("/admin/breakers", guarded(breakers))
    app.router.add_get("/admin/flags", guarded(flags))
    app.router.add_post("/admin/reload", guarded(reload, "admin"))
    app.router.add_get("/admin/spend", guarded(spend))
    app.router.add_get("/admin/sessions", guarded(sessions))
    app.router.add_get("/admin/sessions/{session}", guarded(session))
