"""Runtime virtual keys end to end, through the admin API and the official SDK: a key made
at run time works and is its agent's; revoked, rotated out (after its grace) or expired it
is a 401 that says so; its models limit, rpm and budget hold; no admin answer or log line
carries a secret or a digest; bad bodies are 400s. On both backends (make_any_stack)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

MSG = [{"role": "user", "content": "hi"}]


def make_key(stack: Stack, **body: Any) -> dict[str, Any]:
    r = stack.admin.post("/admin/keys", json={"agent": "helper", **body})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    out = r.json()
    assert out["secret"].startswith("sk-tw-") and "digest" not in out
    return out


def client(stack: Stack, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)


def no_secrets(texts: list[str], secrets: list[str]) -> None:
    digests = [hashlib.sha256(s.encode()).hexdigest() for s in secrets]
    for text in texts:
        for s in secrets + digests:
            assert s not in text


def test_create_use_list_revoke(make_any_stack: Callable[..., Stack],
                                caplog: pytest.LogCaptureFixture) -> None:
    stack = make_any_stack(unknown_keys="reject")
    caplog.set_level(logging.DEBUG)
    made = make_key(stack, label="ci runner")
    secret, key_id = made["secret"], made["id"]
    raw = client(stack, secret).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-tollway-agent"] == "helper"
    rows = stack.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
    assert any(r["key"] == "helper" and r["requests"] == 1 for r in rows)
    listed = stack.admin.get("/admin/keys", params={"agent": "helper"})
    assert [k["id"] for k in listed.json()["keys"]] == [key_id]
    assert listed.json()["keys"][0]["status"] == "active"
    assert stack.admin.get("/admin/keys", params={"agent": "support-bot"}).json()["keys"] == []
    one = stack.admin.get(f"/admin/keys/{key_id}")
    gone = stack.admin.delete(f"/admin/keys/{key_id}")
    assert gone.status_code == 200 and gone.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as e:
        client(stack, secret).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert e.value.code == "key_revoked" and "revoked" in str(e.value)
    # Revoking again is harmless; an unknown id is a 404.
    assert stack.admin.post(f"/admin/keys/{key_id}/revoke").json()["status"] == "revoked"
    assert stack.admin.delete("/admin/keys/key_000000000000").status_code == 404
    # The Anthropic dialect gets its own 401 shape.
    r = httpx.post(stack.url + "/v1/messages", headers={"x-api-key": secret},
                   json={"model": "claude-sonnet", "max_tokens": 5, "messages": MSG})
    assert r.status_code == 401 and r.json()["type"] == "error"
    assert any(r.getMessage() == "admin action" for r in caplog.records)
    no_secrets([listed.text, one.text, gone.text,
                *(rec.getMessage() + str(getattr(rec, "fields", "")) for rec in caplog.records)],
               [secret])
    assert secret not in caplog.text


def test_rotate_with_grace_then_old_refused(make_any_stack: Callable[..., Stack]) -> None:
    stack = make_any_stack(unknown_keys="reject")
    made = make_key(stack)
    old = made["secret"]
    r = stack.admin.post(f"/admin/keys/{made['id']}/rotate", json={"grace_s": 60})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    new = r.json()["secret"]
    assert new != old and r.json()["id"] == made["id"] and r.json()["grace_until"]
    for secret in (old, new):  # within the grace both work
        client(stack, secret).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    r = stack.admin.post(f"/admin/keys/{made['id']}/rotate")  # no body: no grace
    newest = r.json()["secret"]
    for secret in (old, new):
        with pytest.raises(openai.AuthenticationError) as e:
            client(stack, secret).chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert e.value.code == "key_revoked" and "rotated" in str(e.value)
    client(stack, newest).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    no_secrets([r.text.replace(newest, ""),
                stack.admin.get("/admin/keys").text], [old, new, newest])
    stack.admin.delete(f"/admin/keys/{made['id']}")
    r = stack.admin.post(f"/admin/keys/{made['id']}/rotate")
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_revoked"


def test_expiry_models_and_limits(make_any_stack: Callable[..., Stack]) -> None:
    stack = make_any_stack()
    short = make_key(stack, expires_in_s=0.3)
    c = client(stack, short["secret"])
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)

    def expired() -> bool:
        try:
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        except openai.AuthenticationError as e:
            assert e.code == "key_expired"
            return True
        return False

    wait_until(expired, timeout=5)
    assert stack.admin.get(f"/admin/keys/{short['id']}").json()["status"] == "expired"
    limited = client(stack, make_key(stack, models=["gpt-4o*"])["secret"])
    limited.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.PermissionDeniedError) as e:
        limited.chat.completions.create(model="fast", messages=MSG)
    assert e.value.code == "policy_denied" and "may not use model 'fast'" in str(e.value)
    slow = client(stack, make_key(stack, rpm=2)["secret"])
    for _ in range(2):
        slow.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        slow.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    poor = client(stack, make_key(stack, budget_usd_day=0.000001)["secret"])
    with pytest.raises(openai.APIStatusError) as e:
        poor.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=1000)
    assert e.value.status_code == 402 and e.value.code == "budget_exceeded"


BAD_BODIES: list[Any] = [
    b"not json", b"[1]", b"", {}, {"agent": 3}, {"agent": "mallory"},
    {"agent": "helper", "model": ["x"]}, {"agent": "helper", "models": "gpt-4o"},
    {"agent": "helper", "models": [1]}, {"agent": "helper", "models": [""]},
    {"agent": "helper", "expires_in_s": -1}, {"agent": "helper", "expires_in_s": True},
    {"agent": "helper", "expires": "yesterday"}, {"agent": "helper", "expires": 1},
    {"agent": "helper", "expires": 9e99, "expires_in_s": 5},
    {"agent": "helper", "rpm": 0}, {"agent": "helper", "rpm": 1.5},
    {"agent": "helper", "budget_usd_day": "5"}, {"agent": "helper", "budget_usd_day": 0},
    {"agent": "helper", "label": ["x"]}, {"agent": "helper", "label": "x" * 201},
    {"agent": "helper", "tools": [[]]}, {"agent": ["helper"]},
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_bodies_are_400(stack: Stack, body: Any) -> None:
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = stack.admin.post("/admin/keys", **kw)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_key_request"


def test_bad_rotations_and_auth(stack: Stack) -> None:
    made = make_key(stack)
    for body in ({"grace_s": -1}, {"grace_s": "5"}, {"grace": 5}, [1],
                 {"grace_s": 10 ** 9}):
        r = stack.admin.post(f"/admin/keys/{made['id']}/rotate", json=body)
        assert r.status_code == 400, (body, r.text)
    assert stack.admin.post("/admin/keys/key_nope/rotate").status_code == 404
    assert stack.admin.get("/admin/keys/key_nope").status_code == 404
    anyone = httpx.post(stack.admin_url + "/admin/keys", json={"agent": "helper"},
                        headers={"Authorization": f"Bearer {made['secret']}"})
    assert anyone.status_code == 401
