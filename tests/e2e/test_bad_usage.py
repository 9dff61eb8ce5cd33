"""An upstream whose usage is not a set of token counts: the step is still recorded, priced
from the gateway's own count and flagged; metrics never raise.

Measured before: `{"prompt_tokens": "12", "completion_tokens": -50}` gave the client a 200,
raised ValueError in the metrics, and recorded nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

BROKEN = [{"prompt_tokens": "12", "completion_tokens": -50},
          {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 99}},
          {"completion_tokens": 10**12}, {"prompt_tokens_details": "none"}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("usage", BROKEN)
def test_broken_usage_is_recorded_as_counted_and_flagged(
        make_any_stack: Callable[..., Stack], usage: dict, stream: bool) -> None:  # type: ignore[type-arg]
    s = make_any_stack(extra="trace: {content: false}")
    s.mock.settings.usage_override = usage
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support")
    session = f"bad-usage-{stream}"
    kw = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count me"}],
          "extra_headers": {"x-tollway-session": session}}
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(stream=True, **kw) if c.choices)
    else:
        text = client.chat.completions.create(**kw).choices[0].message.content
    assert text

    def step() -> dict | None:  # type: ignore[type-arg]
        view = s.admin.get(f"/admin/sessions/{session}")
        return view.json()["steps"][0] if view.status_code == 200 else None
    wait_until(lambda: step() is not None)
    st = step()
    assert st is not None
    assert "usage_invalid" in st["flags"] and st["usage_source"] == "counted"
    assert st["input_tokens"] > 0 and st["output_tokens"] > 0 and st["cost_usd"] > 0
    assert s.metric("tollway_upstream_usage_invalid_total") == 1
    assert s.metric("tollway_tokens_total", type="output") == st["output_tokens"]
