"""Redaction, the texts of each dialect, the stream hold-back window and the engine."""

from __future__ import annotations

import orjson
import pytest

from tollway.config.guardrails import CustomConfig, GuardrailsConfig
from tollway.guardrails.engine import Guardrails
from tollway.guardrails.redact import Redactor
from tollway.guardrails.slots import answer_slots, request_slots
from tollway.guardrails.stream import Holdback
from tollway.policy.guardrails import GuardrailRule

CFG = GuardrailsConfig(custom=CustomConfig(patterns={"EMAIL": r"[\w.]+@[\w.]+\.com",
                                                      "SECRET": r"sk-[a-z0-9]{8}"}))


def rule(action: str = "redact", on: tuple[str, ...] = ("prompt",), **kw: object,
         ) -> GuardrailRule:
    return GuardrailRule(name=f"r-{action}", on=list(on), detectors=["custom"],
                         action=action, **kw)  # type: ignore[arg-type]


def check(g: Guardrails, slots: list, where: str = "prompt"):  # type: ignore[no-untyped-def]
    return g.check(slots, {where: g.applicable(where, "a", "t", "m"),
                           "tool_results": g.applicable("tool_results", "a", "t", "m")})


def test_placeholders_are_stable_and_restorable() -> None:
    g = Guardrails(CFG, [rule(restore=True)])
    body = {"messages": [
        {"role": "user", "content": "mail bob@x.com and amy@y.com, again bob@x.com"},
        {"role": "user", "content": [{"type": "text", "text": "cc amy@y.com"}]}]}
    slots = request_slots(body)
    r = Redactor()
    r.apply(slots, check(g, slots).hits)
    assert body["messages"][0]["content"] == "mail <EMAIL_1> and <EMAIL_2>, again <EMAIL_1>"
    assert body["messages"][1]["content"][0]["text"] == "cc <EMAIL_2>"
    assert r.restore("sent to <EMAIL_2> and <EMAIL_1>") == "sent to amy@y.com and bob@x.com"


def test_mask_and_overlapping_findings_merge() -> None:
    g = Guardrails(GuardrailsConfig(custom=CustomConfig(patterns={"A": "abcd", "B": "cdef"})),
                   [rule(redact_with="mask")])
    body = {"messages": [{"role": "user", "content": "xxabcdefyy"}]}
    slots = request_slots(body)
    Redactor().apply(slots, check(g, slots).hits)
    assert body["messages"][0]["content"] == "xx******yy"


def test_slots_of_each_dialect_tell_tool_results_apart() -> None:
    chat = {"messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "f", "arguments": "{\"q\": \"x\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "RESULT"}]}
    kinds = {s.text: s.kind for s in request_slots(chat)}
    assert kinds == {"sys": "prompt", "hi": "prompt", "{\"q\": \"x\"}": "prompt",
                     "RESULT": "tool_results"}
    anthropic = {"system": "S", "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "R"}]},
        {"type": "text", "text": "T"},
        {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}]}
    assert {s.text: s.kind for s in request_slots(anthropic)} == {
        "S": "prompt", "R": "tool_results", "T": "prompt"}
    responses = {"instructions": "I", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "U"}]},
        {"type": "function_call_output", "call_id": "c", "output": "O"}]}
    assert {s.text: s.kind for s in request_slots(responses)} == {
        "I": "prompt", "U": "prompt", "O": "tool_results"}
    answer = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant",
              "content": "A"}, "finish_reason": "stop"}], "usage": {"total_tokens": 3}}
    assert [s.text for s in answer_slots(answer)] == ["A"]


def test_rules_by_place_agent_and_model() -> None:
    g = Guardrails(CFG, [rule("block", on=("tool_results",)),
                         rule("flag", agents=["other"]),
                         GuardrailRule(name="gpt-only", on=["prompt"], detectors=["custom"],
                                       action="redact", models=["gpt-*"])])
    body = {"messages": [{"role": "user", "content": "bob@x.com"},
                         {"role": "tool", "tool_call_id": "c", "content": "sk-abcdefgh"}]}
    v = check(g, request_slots(body))
    assert {(h.rule.name, h.kind) for h in v.hits} == {("r-block", "tool_results")}
    assert v.action == "block"
    assert not g.applicable("prompt", "a", "t", "claude")
    assert g.applicable("prompt", "a", "t", "gpt-4o")


def test_texts_past_max_chars_are_not_scanned_but_said() -> None:
    g = Guardrails(GuardrailsConfig(max_chars=10, custom=CFG.custom), [rule("block")])
    body = {"messages": [{"role": "user", "content": "x" * 20 + " bob@x.com"}]}
    v = check(g, request_slots(body))
    assert v.hits == [] and v.unscanned


def sse(*pieces: str) -> bytes:
    return b"".join(b"data: " + orjson.dumps({"choices": [{"delta": {"content": p}}]})
                    + b"\n\n" for p in pieces)


def text_of(blob: bytes) -> str:
    out = []
    for ev in blob.split(b"\n\n"):
        if ev.startswith(b"data: {"):
            out.append(orjson.loads(ev[6:])["choices"][0]["delta"]["content"])
    return "".join(out)


def test_holdback_sees_a_value_split_over_events_and_redacts_it_in_place() -> None:
    g = Guardrails(CFG, [rule(on=("answer",))])
    hb = Holdback("chat", window=16)
    r = Redactor()
    sent = b""
    for group in (sse("Write to b", "ob@x"), sse(".com now"), sse(" please, ", "thanks a lot!")):
        hb.add(group)
        slot = hb.slot()
        v = g.check([slot], {"answer": g.applicable("answer", "a", "t", "m")})
        r.apply([slot], v.hits)
        out = hb.release(False)
        assert b"bob@" not in out
        sent += out
    sent += hb.release(True)
    assert text_of(sent) == "Write to <EMAIL_1> now please, thanks a lot!"
    assert sent.count(b"data: ") == 5  # every event is still there, in order


def test_holdback_keeps_a_window_and_non_text_events_in_order() -> None:
    hb = Holdback("chat", window=10)
    hb.add(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n' + sse("0123456789abc"))
    first = hb.release(False)  # 13 characters follow the role event; none the text event
    assert first == b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
    hb.add(sse("defghijklmn") + b"data: [DONE]\n\n")
    out = hb.release(False)
    assert text_of(out) == "0123456789abc"
    rest = hb.release(True)
    assert rest.endswith(b"data: [DONE]\n\n") and text_of(rest) == "defghijklmn"


@pytest.mark.parametrize("endpoint,event", [
    ("messages", b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                 b'"index":0,"delta":{"type":"text_delta","text":"mail bob@x.com"}}'),
    ("responses", b'event: response.output_text.delta\ndata: {"type":'
                  b'"response.output_text.delta","delta":"mail bob@x.com"}'),
])
def test_holdback_reads_each_dialects_text(endpoint: str, event: bytes) -> None:
    g = Guardrails(CFG, [rule(on=("answer",))])
    hb = Holdback(endpoint, window=16)
    hb.add(event + b"\n\n")
    slot = hb.slot()
    Redactor().apply([slot], g.check([slot], {"answer": g.applicable(
        "answer", "a", "t", "m")}).hits)
    assert b"mail <EMAIL_1>" in hb.release(True)


def test_summary_events_repeating_the_text_are_scrubbed_too() -> None:
    hb = Holdback("responses", window=4)
    done = (b'event: response.output_text.done\ndata: {"type":"response.output_text.done",'
            b'"text":"mail bob@x.com"}\n\n')
    hb.add(done)
    assert b"bob@x.com" not in hb.release(True, scrub={"bob@x.com": "<EMAIL_1>"})
