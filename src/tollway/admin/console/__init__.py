"""The operator console under /console: where people approve, kill and see what every agent
spent. Server-rendered pages (pages.py), signed-cookie sessions (auth.py), live lists by
server-sent events (events.py), assets vendored and served from the package (static/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from tollway.admin.console.events import events
from tollway.admin.console.pages import Console

if TYPE_CHECKING:
    from tollway.gateway import Gateway

STATIC = Path(__file__).parent / "static"


def add_console_routes(app: web.Application, gw: Gateway) -> Console:
    c = Console(gw)
    r = app.router
    r.add_get("/console", lambda _: _redirect("/console/"))
    r.add_get("/console/login", c.login_form)
    r.add_post("/console/login", c.login)
    r.add_post("/console/logout", c.page(c.logout))
    r.add_get("/console/", c.page(c.overview))
    r.add_get("/console/sessions", c.page(c.sessions))
    r.add_get("/console/sessions/{sid}", c.page(c.session))
    r.add_post("/console/sessions/{sid}/{action:kill|revive}", c.page(c.kill, "admin"))
    r.add_get("/console/approvals", c.page(c.approvals))
    r.add_post("/console/approvals/{id}/{decision:approve|reject}",
               c.page(c.decide, "approve"))
    r.add_get("/console/agents", c.page(c.agents))
    r.add_post("/console/agents/{name}/{action:pause|resume}", c.page(c.agent_flag, "admin"))
    r.add_post("/console/keys", c.page(c.create_key, "admin"))
    r.add_post("/console/keys/{id}/revoke", c.page(c.revoke_key, "admin"))
    r.add_get("/console/breakers", c.page(c.breakers))
    r.add_get("/console/cache", c.page(c.cache))
    r.add_post("/console/cache/purge", c.page(c.purge, "admin"))
    r.add_get("/console/guardrails", c.page(c.guardrails))
    r.add_get("/console/config", c.page(c.config))
    r.add_post("/console/config/reload", c.page(c.reload, "admin"))
    r.add_get("/console/audit", c.page(c.audit_page))
    r.add_get("/console/events", c.page(lambda req, op: events(c, req, op)))
    r.add_static("/console/static", STATIC, append_version=False)

    async def start(_: web.Application) -> None:
        c.sampler.start()

    async def stop(_: web.Application) -> None:
        await c.sampler.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return c


async def _redirect(to: str) -> web.StreamResponse:
    raise web.HTTPFound(to)
