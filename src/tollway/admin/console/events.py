"""Server-sent events for the console's live lists: the pending approvals and the sessions,
rendered server-side and pushed when they change (htmx's SSE extension swaps them in).

One stream per open console page; the State is read twice a second per stream, and a
fragment is sent only when its HTML changed, so an idle page costs almost nothing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from tollway.admin.auth import OPERATOR
from tollway.admin.console.pages import CSRF

if TYPE_CHECKING:
    from tollway.admin.console.pages import Console
    from tollway.admin.operators import Operator

POLL_S = 0.5
KEEPALIVE_S = 15.0


async def events(console: Console, request: web.Request, op: Operator) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    sent: dict[str, str] = {}
    quiet = 0.0
    try:
        while True:
            for name, html in (await _fragments(console, request)).items():
                if sent.get(name) != html:
                    sent[name] = html
                    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
                    await response.write(f"event: {name}\n{data}\n".encode())
                    quiet = 0.0
            if quiet >= KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            await asyncio.sleep(POLL_S)
            quiet += POLL_S
    except (ConnectionError, asyncio.CancelledError):
        pass
    return response


async def _fragments(console: Console, request: web.Request) -> dict[str, str]:
    gw = console.gw
    rows = [a.to_dict() for a in await gw.state.tools.approvals()]
    pending = sorted((a for a in rows if a["status"] == "pending"),
                     key=lambda a: a["created"], reverse=True)
    approvals = console.env.get_template("approvals_rows.html").render(
        pending=pending, op=request[OPERATOR], csrf=request[CSRF])
    sessions = await gw.state.ledger.sessions(agent=None, since=None, sort="recent", limit=50)
    flags = await gw.state.flags.all()
    session_rows = console.env.get_template("sessions_rows.html").render(
        rows=sessions, killed=set(flags.get("session", [])))
    return {"approvals": approvals, "sessions": session_rows}
