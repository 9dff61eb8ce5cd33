"""What must not leak or be open by default: the admin API without a key, and a provider key
an upstream echoes back.

Measured before: with no admin_key (the default gateway.yaml), any local process, an agent
on the same host included, had the whole admin API; a hostile upstream's 401 body echoing the
provider key was passed through verbatim.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Stack

KEY = "sk-upstream-openai"  # the provider key the test config gives the OpenAI mock


def test_no_admin_key_closes_the_admin_api(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    text = s.config_text.replace(" admin_key: admin-secret,", "")
    assert "admin_key" not in text
    closed = make_stack(config_text=text)
    for method, path in (("GET", "/admin/spend"), ("GET", "/admin/sessions"),
                         ("POST", "/admin/reload"), ("POST", "/admin/agents/x/pause")):
        r = httpx.request(method, closed.admin_url + path)  # from loopback, with no key
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "admin_closed"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_echoing_the_provider_key_is_scrubbed(stack: Stack, stream: bool) -> None:
    stack.mock.settings.reply = f"Your key is {KEY}, keep it safe. Bearer {KEY}."
    r = httpx.post(stack.url + "/v1/chat/completions", headers={
        "Authorization": "Bearer sk-tw-support"}, json={
        "model": "gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "what is my key?"}]})
    assert r.status_code == 200
    assert KEY not in r.text and "[redacted]" in r.text

