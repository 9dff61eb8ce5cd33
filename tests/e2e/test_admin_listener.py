"""The admin listener and operators: the admin API and /metrics on a port of their own, never
on the public one; operators with roles (viewer reads, approver decides approvals, admin
changes state); every admin action audited with the operator and the reason, never a token.

Measured before: the admin API and /metrics were served on the public port (4100) to anyone
holding the one admin key, and the audit record of an action named only the peer address.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import Stack
from tollway.admin.auth import OPERATOR
from tollway.admin.listener import build_admin_app
from tollway.admin.operators import Operator
from tollway.state.toolstate import Approval

TOKENS = {"viewer": "tok-viewer-1", "approver": "tok-approver-2", "admin": "tok-admin-3"}
OPERATORS = f"""operators:
  vera: {{token: {TOKENS["viewer"]}, role: viewer}}
  alan: {{token: "sha256:{hashlib.sha256(TOKENS["approver"].encode()).hexdigest()}",
          role: approver}}
  root: {{token: {TOKENS["admin"]}, role: admin}}
"""


def call(s: Stack, method: str, path: str, token: str | None = None,
         header: str = "Authorization", **kw: Any) -> httpx.Response:
    headers = {}
    if token is not None:
        headers[header] = f"Bearer {token}" if header == "Authorization" else token
    return httpx.request(method, s.admin_url + path, headers=headers, timeout=10, **kw)


def pending(s: Stack) -> str:
    """A red-zone call waiting for a human, put straight into the state."""
    a = Approval(tool="deploy", agent="support-bot", team="support", session="s1",
                 summary="POST /deploy", expires=time.time() + 600)
    s.loop.run(s.gateway.state.tools.approval_put(a))
    return a.id


def refused(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "admin_error" and err["code"] == code, err
    return str(err["message"])


def test_role_matrix(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(extra=OPERATORS)
    reads = [("GET", "/admin/spend"), ("GET", "/admin/sessions"), ("GET", "/admin/flags"),
             ("GET", "/admin/breakers"), ("GET", "/admin/approvals")]
    for role, token in (*TOKENS.items(), ("admin", "admin-secret")):  # admin_key: an admin
        for method, path in reads:
            assert call(s, method, path, token).status_code == 200, (role, path)
        decided = call(s, "POST", f"/admin/approvals/{pending(s)}", token,
                       json={"decision": "approve"})
        kill = call(s, "POST", "/admin/sessions/s-x/kill", token)
        purge = call(s, "POST", "/admin/cache/purge", token)
        reload = call(s, "POST", "/admin/reload", token)
        if role == "viewer":
            assert "needs the approver role" in refused(decided, 403, "admin_forbidden")
        else:
            assert decided.status_code == 200 and decided.json()["status"] == "approved"
        if role != "admin":
            for r in (kill, purge, reload):
                message = refused(r, 403, "admin_forbidden")
                assert f"has the {role} role; this needs the admin role" in message
        else:
            assert kill.status_code == 200 and purge.status_code == 200
            assert reload.status_code == 400  # past the gate: this stack has no config file
    # x-api-key is accepted as the SDKs send it
    assert call(s, "GET", "/admin/spend", TOKENS["viewer"], header="x-api-key"
                ).status_code == 200


def test_401_and_closed_shapes(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(extra=OPERATORS)
    refused(call(s, "GET", "/admin/spend"), 401, "admin_unauthorized")
    refused(call(s, "GET", "/admin/spend", "wrong"), 401, "admin_unauthorized")
    # the sha256 form is the digest, not a token: presenting it is no login
    digest = hashlib.sha256(TOKENS["approver"].encode()).hexdigest()
    refused(call(s, "GET", "/admin/spend", f"sha256:{digest}"), 401, "admin_unauthorized")
    refused(call(s, "GET", "/admin/spend", digest), 401, "admin_unauthorized")
    # operators without an admin key keep the API open to them alone
    only_ops = make_stack(config_text=s.config_text.replace(" admin_key: admin-secret,", ""))
    assert call(only_ops, "GET", "/admin/spend", TOKENS["viewer"]).status_code == 200
    refused(call(only_ops, "GET", "/admin/spend", "admin-secret"), 401, "admin_unauthorized")
    # neither: closed to everyone, loopback included
    closed = make_stack(config_text=make_stack().config_text.replace(
        " admin_key: admin-secret,", ""))
    refused(call(closed, "GET", "/admin/spend", "anything"), 403, "admin_closed")


def test_main_port_serves_no_admin_api(stack: Stack) -> None:
    assert stack.admin_url != stack.url and stack.gateway.admin_port
    for method, path in (("GET", "/admin/spend"), ("POST", "/admin/sessions/x/kill"),
                         ("POST", "/admin/reload")):
        r = httpx.request(method, stack.url + path,
                          headers={"Authorization": "Bearer admin-secret"})
        assert "admin listener" in refused(r, 404, "unknown_endpoint")
    assert stack.admin.get("/admin/spend").status_code == 200
    # nor does the admin listener serve the client endpoints
    r = httpx.post(stack.admin_url + "/v1/chat/completions", json={})
    refused(r, 404, "unknown_endpoint")
    assert httpx.get(stack.admin_url + "/healthz").json() == {"status": "ok"}


def test_metrics_on_both_ports_or_admin_only(make_stack: Callable[..., Stack]) -> None:
    both = make_stack()
    for url in (both.url, both.admin_url):
        r = httpx.get(url + "/metrics")
        assert r.status_code == 200 and "tollway_requests_total" in r.text
    admin_only = make_stack(server_extra="metrics_on_main: false")
    assert httpx.get(admin_only.url + "/metrics").status_code == 404
    r = httpx.get(admin_only.admin_url + "/metrics")
    assert r.status_code == 200 and "tollway_requests_total" in r.text


def test_no_admin_listener_keeps_everything_on_the_main_port(
        make_stack: Callable[..., Stack]) -> None:
    s = make_stack(server_extra="admin: {enabled: false}, metrics_on_main: false")
    assert s.gateway.admin_port is None and s.admin_url == s.url
    assert s.admin.get("/admin/spend").status_code == 200
    refused(httpx.get(s.url + "/admin/spend"), 401, "admin_unauthorized")
    # with no admin listener /metrics stays on the main port, whatever metrics_on_main says
    assert httpx.get(s.url + "/metrics").status_code == 200


def test_audit_carries_operator_and_reason_never_a_token(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    s = make_stack(extra=OPERATORS + f'audit: {{enabled: true, path: "{path}"}}\n')
    assert call(s, "POST", "/admin/sessions/s-1/kill", TOKENS["admin"],
                json={"reason": "looping on a refund"}).status_code == 200
    assert call(s, "POST", "/admin/agents/support-bot/pause?reason=budget%20review",
                TOKENS["admin"]).status_code == 200
    assert call(s, "POST", "/admin/cache/purge", "admin-secret").status_code == 200
    approval = pending(s)
    r = call(s, "POST", f"/admin/approvals/{approval}", TOKENS["approver"],
             json={"decision": "reject", "reason": "not on a Friday"})
    assert r.status_code == 200 and r.json()["decided_by"] == "alan"  # by: the operator
    # a reason that is not a string, or a body that is not JSON, is refused before acting
    refused(call(s, "POST", "/admin/sessions/s-2/kill", TOKENS["admin"],
                 json={"reason": 3}), 400, "bad_body")
    refused(call(s, "POST", "/admin/sessions/s-2/kill", TOKENS["admin"], content=b"{"),
            400, "bad_body")
    assert s.loop.run(s.gateway.state.flags.all())["session"] == ["s-1"]

    def actions() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()
                if '"admin"' in line]
    deadline = time.monotonic() + 5
    while len(actions()) < 4:  # written in batches every 200 ms
        assert time.monotonic() < deadline, actions()
        time.sleep(0.05)
    text = path.read_text()
    for token in (*TOKENS.values(), "admin-secret",
                  hashlib.sha256(TOKENS["approver"].encode()).hexdigest()):
        assert token not in text
    fields = [a["data"] for a in actions()]
    kill = next(f for f in fields if f.get("action") == "kill")
    assert kill["operator"] == "root" and kill["reason"] == "looping on a refund"
    pause = next(f for f in fields if f.get("action") == "pause")
    assert pause["operator"] == "root" and pause["reason"] == "budget review"
    purge = next(f for f in fields if f.get("action") == "cache_purge")
    assert purge["operator"] == "admin" and purge["reason"] is None
    decided = next(f for f in fields if f.get("action") == "approval")
    assert decided["operator"] == "alan" and decided["by"] == "alan"
    assert decided["reason"] == "not on a Friday"


def test_reload_changes_operators(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    s = make_stack(extra=OPERATORS, config_file=str(cfg))
    assert call(s, "GET", "/admin/spend", TOKENS["viewer"]).status_code == 200
    text = s.config_text.replace(f"vera: {{token: {TOKENS['viewer']}, role: viewer}}",
                                 "vera: {token: tok-vera-new, role: approver}")
    assert text != s.config_text
    cfg.write_text(text)
    assert call(s, "POST", "/admin/reload", TOKENS["admin"]).json()["result"] == "ok"
    refused(call(s, "GET", "/admin/spend", TOKENS["viewer"]), 401, "admin_unauthorized")
    r = call(s, "POST", f"/admin/approvals/{pending(s)}", "tok-vera-new",
             json={"decision": "approve"})
    assert r.status_code == 200 and r.json()["decided_by"] == "vera"


def test_an_operator_set_by_the_console_is_accepted(stack: Stack) -> None:
    """The console's middleware sets request[OPERATOR] from its session: no token needed,
    and the role still decides."""
    async def run() -> tuple[int, int, int]:
        app = build_admin_app(stack.gateway)

        @web.middleware
        async def session(request: web.Request, handler: Any) -> web.StreamResponse:
            request[OPERATOR] = Operator("carol", request.headers.get("x-role", "viewer"))
            return await handler(request)
        app.middlewares.append(session)
        async with TestClient(TestServer(app)) as client:
            read = (await client.get("/admin/flags")).status
            kill = (await client.post("/admin/sessions/s/kill")).status
            ok = (await client.post("/admin/sessions/s/kill",
                                    headers={"x-role": "admin"})).status
        return read, kill, ok
    assert stack.loop.run(run()) == (200, 403, 200)


def test_both_listeners_close_on_shutdown(bg_loop: Any) -> None:
    s = Stack(bg_loop)
    urls = (s.url, s.admin_url)
    for url in urls:
        assert httpx.get(url + "/healthz").status_code == 200
    s.close()
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz", timeout=2)
