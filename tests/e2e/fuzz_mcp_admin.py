"""Hypothesis strategies for fuzzing the MCP proxy (JSON-RPC messages and batches, valid,
wrong and hostile) and the paths, query strings and headers of the other endpoints."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.e2e.fuzz_inputs import Raw, encode, garbage, hostile, plain, texts, wrong

rpc_ids = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=6), st.none(),
                    st.sampled_from([1.5, True, [], {}, Raw(b"1e400")]))
rpc_methods = st.one_of(st.sampled_from(["initialize", "tools/list", "tools/call", "ping",
                                         "notifications/initialized", "resources/list"]),
                        st.text(max_size=8), wrong)
rpc_params = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["echo", "add", "nope"]), wrong)},
                          optional={"arguments": st.one_of(
                              st.fixed_dictionaries({"text": st.one_of(st.text(max_size=8),
                                                                       wrong)}), wrong)}),
    wrong)


@st.composite
def rpc_message(draw: st.DrawFn) -> dict[str, Any]:
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        msg["jsonrpc"] = "2.0" if draw(st.integers(0, 4)) else draw(wrong)
    if draw(st.integers(0, 3)):
        msg["id"] = draw(rpc_ids)
    if draw(st.integers(0, 7)):
        msg["method"] = draw(rpc_methods)
    if draw(st.booleans()):
        msg["params"] = draw(rpc_params)
    return msg


#: JSON-RPC that the gateway should pass on: the server judges it
rpc_valid = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": st.sampled_from(["tools/call", "tools/list", "ping",
                                                           "initialize", "resources/list"])},
    optional={"id": st.one_of(st.integers(-(2**31), 2**31), st.text(max_size=6)),
              "params": st.one_of(st.fixed_dictionaries(
                  {"name": st.sampled_from(["echo", "add", "nope", ""])},
                  optional={"arguments": st.dictionaries(st.sampled_from(["text", "a", "b"]),
                                                         plain, max_size=2)}),
                  st.dictionaries(texts, plain, max_size=2))})


@st.composite
def mcp_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "valid", "valid", "valid batch", "wrong",
                                 "wrong batch", "hostile", "garbage"]))
    if kind == "valid":
        return encode(draw(rpc_valid))
    if kind == "valid batch":
        return encode(draw(st.lists(rpc_valid, max_size=3)))
    if kind == "wrong":
        return encode(draw(rpc_message()))
    if kind == "wrong batch":
        return encode(draw(st.lists(st.one_of(rpc_message(), rpc_valid), max_size=4)))
    if kind == "hostile":  # a deep or broken value where the server would look
        return encode({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": draw(hostile)}}})
    return draw(garbage())


query_values = st.one_of(st.text(max_size=10), st.sampled_from(
    ["", "-1", "0", "1e400", "24h", "-5d", "nan", "inf", "99999999999999999999", "agent",
     "team", "model", "cost", "steps", "recent", "*", "agent=x", "2024-13-45", "\x00"]))
path_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
#: the mock echo tool answers any path but one with a line break in it
tool_paths = st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1,
                     max_size=12)
