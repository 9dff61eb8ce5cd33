"""Bad input and upstream failures: a clear error in the endpoint's dialect, a request id,
and nothing half-recorded."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Stack

MSG = [{"role": "user", "content": "hello"}]


def oa(stack: Stack, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0,
                         **kw)  # type: ignore[arg-type]


def an(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="sk-tw-support", max_retries=0)


def post(stack: Stack, path: str, content: bytes) -> httpx.Response:
    return httpx.post(stack.url + path, content=content,
                      headers={"Authorization": "Bearer sk-tw-support",
                               "Content-Type": "application/json"})


def test_malformed_json_in_each_dialect(stack: Stack) -> None:
    r = post(stack, "/v1/chat/completions", b'{"model": "gpt-4o-mini", "messages": [')
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["x-tollway-request-id"]
    r = post(stack, "/v1/messages", b"not json")
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    r = post(stack, "/v1/chat/completions", b"[1, 2]")
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]


def test_missing_and_unknown_model(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oa(stack).chat.completions.create(model="gpt-9-ultra", messages=MSG)
    msg = e.value.body["message"]  # type: ignore[index]
    assert "gpt-9-ultra" in msg and "gpt-4o-mini" in msg and "claude-sonnet" in msg
    assert e.value.response.headers["x-tollway-request-id"]
    with pytest.raises(anthropic.NotFoundError) as e2:
        an(stack).messages.create(model="nope", max_tokens=5, messages=MSG)
    assert e2.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    r = post(stack, "/v1/chat/completions", b'{"messages": []}')
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_required"
    assert stack.mock.requests == []  # nothing reached the provider


def test_wrong_dialect_for_model(stack: Stack) -> None:
    # Chat and messages translate between dialects; embeddings have no Anthropic twin.
    with pytest.raises(openai.BadRequestError) as e:
        oa(stack).embeddings.create(model="claude-sonnet", input="x")
    assert e.value.code == "dialect_mismatch"


def test_oversized_body_is_413_in_dialect(stack: Stack) -> None:
    big = "x" * (1024 * 1024 + 10)  # the test config allows 1 MiB
    with pytest.raises(openai.APIStatusError) as e:
        oa(stack).chat.completions.create(model="gpt-4o-mini",
                                          messages=[{"role": "user", "content": big}])
    assert e.value.status_code == 413 and e.value.code == "request_too_large"
    with pytest.raises(anthropic.APIStatusError) as e2:
        an(stack).messages.create(model="claude-sonnet", max_tokens=5,
                                  messages=[{"role": "user", "content": big}])
    assert e2.value.status_code == 413
    assert e2.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]


def test_upstream_unreachable_is_502(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        oa(stack).chat.completions.create(model="unreachable", messages=MSG)
    assert e.value.status_code == 502 and e.value.code == "upstream_unreachable"
    assert "sk-" not in e.value.message
    assert stack.metric("tollway_upstream_errors_total", provider="dead", kind="connect") == 1
    step = stack.admin.get("/admin/sessions").json()["sessions"][0]
    assert step["cost_usd"] == 0


def test_upstream_timeout_is_504(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(extra="")
    # Shorten the provider timeout on the live runtime's provider object.
    import aiohttp

    prov = s.gateway.runtime.providers["oai"]
    prov.timeout = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(openai.APIStatusError) as e:
        oa(s).chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                      extra_headers={"x-mock-latency-ms": "3000"})
    assert e.value.status_code == 504 and e.value.code == "upstream_timeout"


def test_upstream_errors_pass_through(stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        oa(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={
            "x-mock-status": "429", "x-mock-retry-after": "7"})
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.response.headers["x-tollway-request-id"]
    with pytest.raises(openai.InternalServerError):
        oa(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                          extra_headers={"x-mock-status": "500"})
    with pytest.raises(anthropic.APIStatusError) as e2:
        an(stack).messages.create(model="claude-sonnet", max_tokens=5, messages=MSG,
                                  extra_headers={"x-mock-status": "529"})
    assert e2.value.status_code == 529
    assert e2.value.body["type"] == "error"  # type: ignore[index]
    rows = stack.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
    assert rows[0]["requests"] == 3 and rows[0]["cost_usd"] == 0
    assert stack.metric("tollway_requests_total", status="429") == 1
    assert stack.upstream_connections_in_use() == 0


def test_upstream_drops_non_streamed_request(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        oa(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                          extra_headers={"x-mock-disconnect-after": "0"})
    assert e.value.status_code == 502
    assert stack.upstream_connections_in_use() == 0


def test_reject_unknown_keys(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(unknown_keys="reject")
    bad = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert "sk-wrong" not in str(e.value.body)
    bad_a = anthropic.Anthropic(base_url=s.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad_a.messages.create(model="claude-sonnet", max_tokens=5, messages=MSG)
    ok = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)
    ok.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert s.metric("tollway_requests_total", status="401") == 2


def test_unknown_endpoint_and_admin_auth(stack: Stack) -> None:
    r = httpx.get(stack.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_endpoint"
    r = httpx.get(stack.admin_url + "/admin/spend")
    assert r.status_code == 401
    r = httpx.get(stack.admin_url + "/admin/spend", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert stack.admin.get("/admin/spend?by=bogus").status_code == 400
    assert stack.admin.get("/admin/spend?since=yesterday-ish").status_code == 400
    assert stack.admin.get("/admin/sessions/none").status_code == 404
