"""The command line as a new user meets it: every option says what it is for, a pipe closed
early is not a traceback, and spend by model lists models (tools have their own grouping)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Stack
from tests.e2e.test_tools_http import build, tools  # noqa: F401  (fixture)
from tollway.testing.mock_tools import MockTools

COMMANDS = [["serve"], ["check"], ["explain"], ["schema"], ["spend"], ["audit", "verify"],
            ["audit", "export"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"]]


def helptext(*cmd: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tollway", *cmd, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_option_has_help(cmd: list[str]) -> None:
    text = helptext(*cmd)
    body = text.split("options:", 1)[-1] if "options:" in text else text
    blocks = re.split(r"\n(?=  \S)", body.split("\n", 1)[-1])
    bare = [b.strip() for b in blocks if b.strip() and "  " not in b.strip()
            and "\n" not in b.strip()]
    assert not bare, f"{' '.join(cmd)}: options without help: {bare}"
    if cmd == ["audit", "verify"]:
        positional = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
        assert "oldest first" in positional


def test_a_reader_that_leaves_early_is_not_a_traceback() -> None:
    out = subprocess.run(f"{sys.executable} -m tollway schema | head -c 20", shell=True,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("{") and "Traceback" not in out.stderr
    assert "BrokenPipeError" not in out.stderr


def test_spend_by_model_lists_models_and_by_tool_the_tools(
        make_stack: Callable[..., Stack], tools: MockTools) -> None:  # noqa: F811
    s = build(make_stack, tools, '  models-api: {url: "TOOLS/echo", cost_usd: 0.01}\n')
    httpx.post(s.url + "/tools/models-api/x", json={}, timeout=10,
               headers={"Authorization": "Bearer sk-tw-support"})
    httpx.post(s.url + "/v1/chat/completions", timeout=10, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sk-tw-support"})
    by_model = s.admin.get("/admin/spend", params={"by": "model"}).json()["rows"]
    by_tool = s.admin.get("/admin/spend", params={"by": "tool"}).json()["rows"]
    assert [r["key"] for r in by_model] == ["gpt-4o-mini"]
    assert [r["key"] for r in by_tool] == ["models-api"]
    out = subprocess.run([sys.executable, "-m", "tollway", "spend", "--by", "tool", "--url",
                          s.admin_url, "--admin-key", "admin-secret"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "models-api" in out.stdout and "gpt-4o-mini" not in out.stdout
