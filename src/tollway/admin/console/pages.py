"""The console's pages and actions: server-rendered (Jinja2, autoescaped), live parts
refreshed by htmx, actions audited with the operator's name and their reason.

Roles: a viewer reads every page; an approver also decides approvals; an admin also
kills sessions, pauses agents, purges the cache and reloads the config. A refused action is
a 403 page, never a silent no-op.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from tollway.admin.auth import OPERATOR
from tollway.admin.console import auth, data
from tollway.admin.operators import NEEDS, Operator
from tollway.observe.audit import verify
from tollway.state.keys import KeyRecord, new_id, new_secret

if TYPE_CHECKING:
    from tollway.gateway import Gateway

log = logging.getLogger("tollway.console")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HERE = Path(__file__).parent
CSRF = web.RequestKey("csrf", str)
FORM = web.RequestKey("form", object)
NAV = [("overview", "/console/"), ("sessions", "/console/sessions"),
       ("approvals", "/console/approvals"), ("agents", "/console/agents"),
       ("breakers", "/console/breakers"), ("cache", "/console/cache"),
       ("guardrails", "/console/guardrails"), ("config", "/console/config"),
       ("audit", "/console/audit")]


def _ts(value: float | None) -> str:
    if not value:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + "Z"


def usd(value: float | None) -> str:
    """Dollars as an operator reads them: cents for large sums, micro-dollars for calls."""
    v = value or 0.0
    return f"${v:,.2f}" if abs(v) >= 100 else f"${v:,.6f}"


def runtime_key(form: dict[str, str], agents: set[str]) -> KeyRecord:
    """A key record from the console's form (the secret is added by new_secret_for)."""
    agent = str(form.get("agent", ""))
    if agent not in agents:
        raise ValueError(f"no agent {agent[:64]!r} in the config")
    days = str(form.get("expires_days", "")).strip()
    expires = None
    if days:
        try:
            n = float(days)
        except ValueError:
            raise ValueError("expires in days is a number") from None
        if not 0 < n <= 3650:
            raise ValueError("expires in days is between 0 and 3650")
        expires = time.time() + n * 86400
    models = tuple(m.strip() for m in str(form.get("models", "")).split(",") if m.strip())
    return KeyRecord(id=new_id(), agent=agent, digest="", created=time.time(),
                     expires=expires, models=models or None,
                     label=str(form.get("label", ""))[:100].strip())


def new_secret_for(rec: KeyRecord) -> tuple[str, KeyRecord]:
    secret, digest = new_secret()
    return secret, dataclasses.replace(rec, digest=digest)


class Console:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                      autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["ts"] = _ts
        self.env.filters["usd"] = usd
        self.sampler = data.Sampler(gw)

    # --- plumbing ------------------------------------------------------------------------
    def page(self, handler: Callable[[web.Request, Operator], Awaitable[web.StreamResponse]],
             action: str = "read") -> Handler:
        """Who is asking (the session cookie), CSRF on what changes state, and the role."""
        async def checked(request: web.Request) -> web.StreamResponse:
            found = auth.check(self.gw.config, request.cookies.get(auth.COOKIE))
            if found is None:
                if request.method == "GET" and "HX-Request" not in request.headers:
                    raise web.HTTPSeeOther("/console/login")
                return web.Response(status=401, text="log in again")
            op, nonce = found
            request[OPERATOR], request[CSRF] = op, nonce
            if request.method in auth.UNSAFE:
                form = await request.post()
                request[FORM] = form
                value = form.get("csrf")
                if not auth.csrf_ok(request, nonce, value if isinstance(value, str) else None):
                    return self.render(request, "error.html", status=403,
                                       message="this form is stale or came from elsewhere "
                                               "(CSRF check failed); reload the page")
            if not op.can(action):
                return self.render(request, "error.html", status=403,
                                   message=f"{op.name} is a {op.role}; this needs the "
                                           f"{NEEDS[action]} role")
            return await handler(request, op)
        return checked

    def render(self, request: web.Request, template: str, status: int = 200,
               **ctx: Any) -> web.Response:
        op = request.get(OPERATOR)
        html = self.env.get_template(template).render(
            op=op, csrf=request.get(CSRF, ""), nav=NAV, path=request.path, **ctx)
        return web.Response(text=html, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; "
                                     "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                                     "X-Content-Type-Options": "nosniff"})

    def audit(self, op: Operator, action: str, reason: str | None, **fields: Any) -> None:
        record = {"action": action, "operator": op.name, "via": "console",
                  **({"reason": reason} if reason else {}), **fields}
        log.info("console action", extra={"fields": record})
        if self.gw.audit is not None:
            self.gw.audit.append("admin", record)

    @staticmethod
    def reason(request: web.Request) -> str | None:
        value = (request.get(FORM) or {}).get("reason")
        return str(value)[:500].strip() or None if isinstance(value, str) else None

    # --- login ---------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.StreamResponse:
        return self.render(request, "login.html", error=None)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        op = auth.login(self.gw.config, token if isinstance(token, str) else "")
        if op is None:
            log.warning("console login refused", extra={"fields": {"peer": request.remote}})
            return self.render(request, "login.html", status=401,
                               error="unknown token")
        value, _ = auth.issue(self.gw.config, op)
        response = web.HTTPSeeOther("/console/")
        auth.set_cookie(response, value, secure=request.secure)
        log.info("console login", extra={"fields": {"operator": op.name,
                                                    "peer": request.remote}})
        raise response

    async def logout(self, request: web.Request, op: Operator) -> web.StreamResponse:
        response = web.HTTPSeeOther("/console/login")
        auth.clear_cookie(response)
        raise response

    # --- pages ---------------------------------------------------------------------------
    async def overview(self, request: web.Request, op: Operator) -> web.StreamResponse:
        return self.render(request, "overview.html", o=await data.overview(self.gw),
                           series=self.sampler.series())

    async def sessions(self, request: web.Request, op: Operator) -> web.StreamResponse:
        agent = request.query.get("agent") or None
        sort = request.query.get("sort", "cost")
        rows = await self.gw.state.ledger.sessions(agent=agent, since=None,
                                                   sort=sort if sort in ("cost", "recent")
                                                   else "cost", limit=200)
        flags = await self.gw.state.flags.all()
        killed = set(flags.get("session", []))
        template = "sessions_rows.html" if request.query.get("rows") else "sessions.html"
        return self.render(request, template, rows=rows, killed=killed, agent=agent or "",
                           sort=sort, agents=sorted(self.gw.config.agents))

    async def session(self, request: web.Request, op: Operator) -> web.StreamResponse:
        sid = request.match_info["sid"]
        view = await self.gw.state.ledger.session(sid)
        if view is None:
            return self.render(request, "error.html", status=404,
                               message=f"no session {sid!r}")
        flags = await self.gw.state.flags.all()
        return self.render(request, "session.html", s=view,
                           killed=sid in set(flags.get("session", [])))

    async def kill(self, request: web.Request, op: Operator) -> web.StreamResponse:
        sid = request.match_info["sid"]
        on = request.match_info["action"] == "kill"
        await self.gw.state.flags.set("session", sid, on)
        self.audit(op, "kill" if on else "revive", self.reason(request), session=sid)
        raise web.HTTPSeeOther(f"/console/sessions/{sid}")

    async def approvals(self, request: web.Request, op: Operator) -> web.StreamResponse:
        rows = [a.to_dict() for a in await self.gw.state.tools.approvals()]
        rows.sort(key=lambda a: a["created"], reverse=True)
        pending = [a for a in rows if a["status"] == "pending"]
        history = [a for a in rows if a["status"] != "pending"][:100]
        template = "approvals_rows.html" if request.query.get("rows") else "approvals.html"
        return self.render(request, template, pending=pending, history=history)

    async def decide(self, request: web.Request, op: Operator) -> web.StreamResponse:
        approval_id = request.match_info["id"]
        approve = request.match_info["decision"] == "approve"
        reason = self.reason(request)
        found = await self.gw.state.tools.approval_decide(approval_id, approve, op.name,
                                                          reason)
        if found is None:
            return self.render(request, "error.html", status=404,
                               message=f"no approval {approval_id!r}")
        self.gw.approvals.wake(approval_id)
        d = found.to_dict()
        self.audit(op, "approval", reason, approval=approval_id, decision=d["status"],
                   tool=d["tool"], agent=d["agent"])
        raise web.HTTPSeeOther("/console/approvals")

    async def agents(self, request: web.Request, op: Operator) -> web.StreamResponse:
        keys = [r.view() for r in await self.gw.state.keys.list(None)]
        keys.sort(key=lambda k: k["created"], reverse=True)
        return self.render(request, "agents.html", rows=await data.agents(self.gw),
                           keys=keys, agent_names=sorted(self.gw.config.agents))

    async def create_key(self, request: web.Request, op: Operator) -> web.StreamResponse:
        """A runtime key for an agent; its secret is on the answer page, once."""
        form = request[FORM]
        try:
            rec = runtime_key(form, set(self.gw.config.agents))  # type: ignore[arg-type]
        except ValueError as exc:
            return self.render(request, "error.html", status=400, message=str(exc))
        secret, rec = new_secret_for(rec)
        await self.gw.state.keys.create(rec)
        await self.gw.keys.refresh()
        self.audit(op, "key_create", self.reason(request), key=rec.id, agent=rec.agent,
                   label=rec.label)
        return self.render(request, "key_created.html", key=rec.view(), secret=secret)

    async def revoke_key(self, request: web.Request, op: Operator) -> web.StreamResponse:
        key_id = request.match_info["id"]
        rec = await self.gw.state.keys.revoke(key_id, time.time())
        if rec is None:
            return self.render(request, "error.html", status=404,
                               message=f"no key {key_id[:64]!r}")
        await self.gw.keys.refresh()
        self.audit(op, "key_revoke", self.reason(request), key=rec.id, agent=rec.agent)
        raise web.HTTPSeeOther("/console/agents")

    async def agent_flag(self, request: web.Request, op: Operator) -> web.StreamResponse:
        name = request.match_info["name"]
        on = request.match_info["action"] == "pause"
        await self.gw.state.flags.set("agent", name, on)
        self.audit(op, "pause" if on else "resume", self.reason(request), agent=name)
        raise web.HTTPSeeOther("/console/agents")

    async def breakers(self, request: web.Request, op: Operator) -> web.StreamResponse:
        views = await self.gw.state.breakers.views()
        return self.render(request, "breakers.html",
                           rows=[v.to_dict() for _, v in sorted(views.items())])

    async def cache(self, request: web.Request, op: Operator) -> web.StreamResponse:
        sem = self.gw.semantic
        return self.render(request, "cache.html", totals=data.metric_totals(self.gw),
                           semantic=sem.learner.summary() if sem is not None else None,
                           size=await self.gw.state.cache.size(),
                           semantic_size=sem.size if sem is not None else 0)

    async def guardrails(self, request: web.Request, op: Operator) -> web.StreamResponse:
        """The rules in force and what they found lately (this process; kinds and
        positions, never values), filtered by action, detector, place or agent."""
        g = self.gw.guardrails
        keys = ("action", "detector", "where", "agent")
        chosen = {k: request.query.get(k, "") for k in keys}
        events = list(reversed(g.recent)) if g is not None else []
        options = {k: sorted({str(e[k]) for e in events}) for k in keys}
        shown = [e for e in events if all(not v or str(e[k]) == v for k, v in chosen.items())]
        return self.render(request, "guardrails.html", rules=self.gw.config.policy.guardrails,
                           events=shown[:200], total=len(events), chosen=chosen,
                           options=options)

    async def purge(self, request: web.Request, op: Operator) -> web.StreamResponse:
        gone = await self.gw.state.cache.purge("c:*")
        gone += await self.gw.state.cache.purge("s:*")
        if self.gw.semantic is not None:
            self.gw.semantic.purge("*", "*")
        self.audit(op, "cache_purge", self.reason(request), entries=gone)
        raise web.HTTPSeeOther("/console/cache")

    async def config(self, request: web.Request, op: Operator) -> web.StreamResponse:
        return self.render(request, "config.html", c=data.config_summary(self.gw),
                           result=request.query.get("result"))

    async def reload(self, request: web.Request, op: Operator) -> web.StreamResponse:
        result = await self.gw.reload("console")
        self.audit(op, "reload", self.reason(request), result=result["result"])
        raise web.HTTPSeeOther(f"/console/config?result={result['result']}")

    async def audit_page(self, request: web.Request, op: Operator) -> web.StreamResponse:
        chain, latest = await asyncio.to_thread(self._audit_files)
        return self.render(request, "audit.html", chain=chain, latest=latest)

    def _audit_files(self) -> tuple[str, list[str]]:
        """The chain's check and its latest entries (files: read off the event loop)."""
        acfg = self.gw.config.audit
        if not acfg.enabled:
            return "the audit log is off (audit.enabled)", []
        if acfg.sink != "file":
            return "redis sink: check it with `tollway audit export | tollway audit verify`", []
        path = Path(acfg.path)
        rotated = sorted((p for p in path.parent.glob(path.name + ".*")
                          if p.suffix.lstrip(".").isdigit()),
                         key=lambda p: int(p.suffix[1:]), reverse=True)
        files = [str(p) for p in [*rotated, path] if p.exists()]
        if not files:
            return "no records yet", []
        _, report = verify(files)
        return report, Path(files[-1]).read_text(errors="replace").splitlines()[-50:][::-1]
