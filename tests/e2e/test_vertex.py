"""Vertex AI end to end: a service-account key (generated here, its token endpoint the mock's)
signs a JWT through google-auth, the token goes upstream as a bearer and never back; Gemini
and Claude models in one project, through the official OpenAI and Anthropic SDKs, streamed
and not; a token endpoint that refuses becomes a 502 in the client's dialect."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Stack
from tollway.testing.mock_gemini import MOCK_TOKEN

MODELS = """  vgem: {provider: vx, model: gemini-2.5-pro, price: {input: 1.25, output: 10}}
  vclaude: {provider: vx, model: claude-sonnet-4-5@20250929, price: {input: 3, output: 15}}
"""


def service_account(path: Path, token_uri: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "acme-prod", "private_key_id": "k1",
        "private_key": pem, "client_email": "tollway@acme-prod.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri}))


def vertex_stack(make: Callable[..., Stack], tmp_path: Path, token_path: str = "/token",
                 ) -> Stack:
    sa = tmp_path / "sa.json"  # read at the first request, written once the mock's URL is
    s = make(providers_extra=f'  vx: {{kind: vertex, base_url: "MOCK", project: acme-prod, '
                             f'location: europe-west4, credentials_file: "{sa}"}}\n',
             models_extra=MODELS)
    service_account(sa, s.mock.base_url + token_path)
    s.mock.settings.require_key = MOCK_TOKEN  # every model call must carry the token
    return s


def test_gemini_and_claude_on_vertex_with_a_service_account(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    s = vertex_stack(make_stack, tmp_path)
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)
    r = c.chat.completions.create(model="vgem", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content and r.usage is not None
    token_calls = [q for q in s.mock.requests if q.path == "/token"]
    assert len(token_calls) == 1
    sent = s.mock.requests[-1]
    assert sent.path == ("/v1/projects/acme-prod/locations/europe-west4/publishers/google/"
                         "models/gemini-2.5-pro:generateContent")
    assert sent.headers["authorization"] == f"Bearer {MOCK_TOKEN}"
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="vgem", stream=True, messages=[{"role": "user", "content": "stream it"}])
        if ch.choices)
    assert text.endswith("stream it")
    # Claude on Vertex, through both SDKs
    r = c.chat.completions.create(model="vclaude", messages=[
        {"role": "user", "content": "hello claude"}])
    assert r.choices[0].message.content.endswith("hello claude")  # type: ignore[union-attr]
    sent = s.mock.requests[-1]
    assert sent.path.endswith("/publishers/anthropic/models/claude-sonnet-4-5@20250929"
                              ":rawPredict")
    assert sent.json["anthropic_version"] == "vertex-2023-10-16"
    a = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    with a.messages.stream(model="vclaude", max_tokens=64,
                           messages=[{"role": "user", "content": "stream claude"}]) as st:
        assert "".join(st.text_stream).endswith("stream claude")
    assert s.mock.requests[-1].path.endswith(":streamRawPredict")
    assert len([q for q in s.mock.requests if q.path == "/token"]) == 1  # token reused
    rows = s.admin.get("/admin/spend", params={"by": "provider"}).json()["rows"]
    assert next(r for r in rows if r["key"] == "vx")["requests"] == 4
    assert MOCK_TOKEN not in s.admin.get("/metrics").text


def test_a_refused_token_is_a_502_in_the_clients_dialect(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    s = vertex_stack(make_stack, tmp_path, token_path="/no-such-token-endpoint")
    with pytest.raises(openai.APIStatusError) as e:
        openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0
                      ).chat.completions.create(model="vgem",
                                                messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_auth"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as ae:
        anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0
                            ).messages.create(model="vclaude", max_tokens=8,
                                              messages=[{"role": "user", "content": "x"}])
    assert ae.value.status_code == 502
