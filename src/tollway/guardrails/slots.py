"""The texts of a request or an answer, in any dialect, as places that can be rewritten.

A slot is a (container, key) whose value is a string: redaction writes the new text back
there, so the body keeps its shape. What a dialect calls a tool's result (OpenAI `role:
tool`, Anthropic `tool_result` blocks, Responses `function_call_output`) is content the agent
did not write: those slots are `tool_results`, the indirect path injected instructions take;
the rest of a prompt is `prompt`. Structural fields (roles, ids, names, URLs, images) are
not text and are skipped, so a base64 image is never scanned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SKIP = frozenset({"role", "type", "id", "tool_call_id", "tool_use_id", "call_id", "name",
                  "url", "image_url", "input_image", "data", "media_type", "source",
                  "cache_control", "signature", "file_id", "detail", "format", "mime_type",
                  "model", "status", "object", "index", "finish_reason", "stop_reason",
                  "usage", "logprobs", "refusal", "encrypted_content", "audio"})


@dataclass(slots=True)
class Slot:
    container: Any  # dict or list
    key: Any  # str or int
    kind: str  # prompt, tool_results, answer, tool_args

    @property
    def text(self) -> str:
        return str(self.container[self.key])

    def set(self, value: str) -> None:
        self.container[self.key] = value


def strings(value: Any, kind: str, out: list[Slot]) -> list[Slot]:
    """Every string under `value` that is text, not structure."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in SKIP:
                continue
            if isinstance(v, str):
                if v:
                    out.append(Slot(value, k, kind))
            elif isinstance(v, dict | list):
                strings(v, kind, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, str):
                if v:
                    out.append(Slot(value, i, kind))
            elif isinstance(v, dict | list):
                strings(v, kind, out)
    return out


def request_slots(body: dict[str, Any]) -> list[Slot]:
    out: list[Slot] = []
    for top in ("system", "instructions"):
        v = body.get(top)
        if isinstance(v, str) and v:
            out.append(Slot(body, top, "prompt"))
        elif isinstance(v, list):
            strings(v, "prompt", out)
    messages = body.get("messages")
    if isinstance(messages, list):  # OpenAI chat, Anthropic
        for m in messages:
            if not isinstance(m, dict):
                continue
            if m.get("role") == "tool":
                strings(m, "tool_results", out)
                continue
            content = m.get("content")
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        strings(block, "tool_results", out)
                    else:
                        strings([block], "prompt", out)
                calls = m.get("tool_calls")
                if calls is not None:
                    strings(calls, "prompt", out)
            else:
                strings(m, "prompt", out)
    inp = body.get("input")  # Responses
    if isinstance(inp, str) and inp:
        out.append(Slot(body, "input", "prompt"))
    elif isinstance(inp, list):
        for item in inp:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                strings(item, "tool_results", out)
            else:
                strings([item], "prompt", out)
    return out


def answer_slots(body: Any) -> list[Slot]:
    """An answer's generated text: OpenAI choices, Anthropic content, Responses output."""
    out: list[Slot] = []
    if isinstance(body, dict):
        for key in ("choices", "content", "output"):
            v = body.get(key)
            if isinstance(v, list):
                strings(v, "answer", out)
        if isinstance(body.get("output_text"), str) and body["output_text"]:
            out.append(Slot(body, "output_text", "answer"))
    return out
