"""The semantic cache through the official SDKs, on the memory state and on Redis.

A paraphrase of a stored question is served from the cache (fresh id, zero billed tokens, the
similarity in a header), streamed and not, in both dialects; a near miss (a flipped verb, a
changed number), another agent, another system prompt or earlier turn never is; sampling
requests, errors and cut streams are never stored; a slow embedder is a miss, not a wait.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

# The serving mechanics at a fixed threshold; the learned error bound: test_semantic_learning.py
SEMANTIC = """cache: {semantic: {enabled: true, ttl_s: 60, threshold: 0.87}}
routing: [{name: sem, when: {model: [gpt-4o-mini, claude-sonnet]}, semantic_cache: true}]"""
SYSTEM = {"role": "system", "content": "You are the support assistant of Acme."}
ASKED = "How do I reset my password on the web app?"
PARAPHRASE = "How can I reset my password in the web app?"


@pytest.fixture
def sem(make_any_stack) -> Stack:  # type: ignore[no-untyped-def]
    return make_any_stack(extra=SEMANTIC)  # type: ignore[no-any-return]


def oa(s: Stack, key: str = "sk-tw-support", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers)


def ask(s: Stack, text: str, *, key: str = "sk-tw-support", system: dict[str, str] = SYSTEM,
        before: list[dict[str, str]] | None = None, **kw: Any) -> Any:
    messages = [system, *(before or []), {"role": "user", "content": text}]
    return oa(s, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0, **kw)


def stored(s: Stack, n: int = 1) -> None:
    """Entries are indexed just after their answer went out."""
    wait_until(lambda: s.on_loop(lambda: s.gateway.semantic.size) >= n)


def test_paraphrase_is_served(sem: Stack) -> None:
    s = sem
    first = ask(s, ASKED)
    assert first.headers["x-tollway-cache"] == "miss"
    stored(s)
    calls = len(s.mock.requests)
    r = ask(s, PARAPHRASE)
    assert r.headers["x-tollway-cache"] == "semantic"
    assert 0.87 <= float(r.headers["x-tollway-cache-similarity"]) <= 1
    a, b = first.parse(), r.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.id != a.id and b.id.startswith("chatcmpl-cache")
    assert b.usage.prompt_tokens == 0 and b.usage.completion_tokens == 0
    assert json.loads(r.headers["x-tollway-cache-original-usage"])["output"] == (
        a.usage.completion_tokens)
    assert float(r.headers["x-tollway-cost-usd"]) == 0
    assert len(s.mock.requests) == calls
    assert s.metric("tollway_cache_requests_total", kind="semantic", result="hit") == 1
    assert s.metric("tollway_cache_savings_usd_total", model="gpt-4o-mini") > 0
    assert s.metric("tollway_cache_lookup_seconds_count", kind="semantic") == 2


def test_streamed_paraphrase_is_replayed_as_sse(sem: Stack) -> None:
    s = sem
    with oa(s).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[SYSTEM, {"role": "user", "content": ASKED}],
            temperature=0, stream=True) as r:
        text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    stored(s)
    with oa(s).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[SYSTEM, {"role": "user", "content": PARAPHRASE}],
            temperature=0, stream=True, stream_options={"include_usage": True}) as r:
        assert r.headers["x-tollway-cache"] == "semantic"
        chunks = list(r.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    # A non-streamed request is another partition: it does not get the stream's bytes.
    assert ask(s, PARAPHRASE).headers["x-tollway-cache"] == "miss"


def test_anthropic_streamed_and_not(sem: Stack) -> None:
    s = sem
    # anthropic 0.x SDK: temperature is a plain parameter, but the store header opts in too.
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0,
                            default_headers={"x-tollway-cache": "store"})
    system = "You answer questions about Acme's billing."
    first = c.messages.create(model="claude-sonnet", max_tokens=64, system=system,
                              messages=[{"role": "user", "content": "Where can I download my "
                                         "latest invoice?"}])
    stored(s)
    r = c.messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=64, system=system,
        messages=[{"role": "user", "content": "Where do I download my latest invoice?"}])
    assert r.headers["x-tollway-cache"] == "semantic"
    m = r.parse()
    assert m.content[0].text == first.content[0].text  # type: ignore[union-attr]
    assert m.usage.output_tokens == 0 and m.id != first.id
    with c.messages.stream(model="claude-sonnet", max_tokens=64, system=system,
                           messages=[{"role": "user", "content": "Which payment methods do "
                                      "you accept?"}]) as st:
        streamed = st.get_final_text()
    stored(s, 2)
    with c.messages.stream(model="claude-sonnet", max_tokens=64, system=system,
                           messages=[{"role": "user", "content": "Which payment methods are "
                                      "accepted?"}]) as st:
        assert st.response.headers["x-tollway-cache"] == "semantic"
        assert st.get_final_text() == streamed
        assert st.get_final_message().usage.output_tokens == 0


def test_near_misses_and_other_partitions_miss(sem: Stack) -> None:
    s = sem
    for text in ("How do I enable two-factor authentication on my account?",
                 "Refund order 1234 for the customer",
                 "Summarise the incident report in three bullet points"):
        ask(s, text)
    stored(s, 3)
    for text in ("How do I disable two-factor authentication on my account?",
                 "Refund order 1235 for the customer",
                 "Summarise the incident report in five bullet points",
                 "Summarise the incident report in 'three' bullet points"):
        assert ask(s, text).headers["x-tollway-cache"] == "miss", text
    assert s.metric("tollway_cache_semantic_rejections_total", reason="number") >= 1
    same = "Refund order 1234 for the customer."
    assert ask(s, same).headers["x-tollway-cache"] == "semantic"
    # Another agent (scope: agent), another system prompt, another earlier turn: other
    # partitions.
    assert ask(s, same, key="sk-tw-research").headers["x-tollway-cache"] == "miss"
    assert ask(s, same, system={"role": "system", "content": "You are a sales assistant."}
               ).headers["x-tollway-cache"] == "miss"
    before = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert ask(s, same, before=before).headers["x-tollway-cache"] == "miss"
    assert ask(s, same, max_tokens=5).headers["x-tollway-cache"] == "miss"


def test_what_is_never_stored(sem: Stack) -> None:
    s = sem
    c = oa(s)
    msgs = [SYSTEM, {"role": "user", "content": "Which plans include SSO?"}]
    again = [SYSTEM, {"role": "user", "content": "Which of the plans include SSO?"}]
    c.chat.completions.create(model="gpt-4o-mini", messages=msgs, temperature=0.7)
    assert s.metric("tollway_cache_requests_total", kind="semantic") == 0  # sampling: skipped
    # Errors are not stored.
    with pytest.raises(openai.InternalServerError):
        oa(s, **{"x-mock-status": "500"}).chat.completions.create(
            model="gpt-4o-mini", messages=msgs, temperature=0)
    # no-store: looked up, not stored; no-cache: not even looked up.
    oa(s, **{"x-tollway-cache": "no-store"}).chat.completions.create(
        model="gpt-4o-mini", messages=msgs, temperature=0)
    r = oa(s, **{"x-tollway-cache": "no-cache"}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msgs, temperature=0)
    assert r.headers["x-tollway-cache"] == "miss"
    assert s.metric("tollway_cache_requests_total", kind="semantic", result="skip") == 1
    # The no-cache answer itself was stored: now a paraphrase hits, and only it.
    stored(s)
    assert s.on_loop(lambda: s.gateway.semantic.size) == 1
    assert ask(s, again[1]["content"]).headers["x-tollway-cache"] == "semantic"


def test_cut_stream_is_never_stored(sem: Stack) -> None:
    s = sem
    c = oa(s, **{"x-mock-disconnect-after": "3"})
    with pytest.raises(openai.APIError):
        with c.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", temperature=0, stream=True,
                messages=[SYSTEM, {"role": "user", "content": ASKED}]) as r:
            for _ in r.parse():
                pass
    wait_until(lambda: s.metric("tollway_requests_total", model="gpt-4o-mini") >= 1)
    assert s.on_loop(lambda: s.gateway.semantic.size) == 0


def test_purge_and_expiry(make_any_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_any_stack(extra=SEMANTIC, models_extra="  short: {provider: oai, model: gpt-4o-mini,"
                       " cache_ttl_s: 0.5, semantic_cache: true}\n")
    ask(s, ASKED)
    stored(s)
    assert ask(s, PARAPHRASE).headers["x-tollway-cache"] == "semantic"
    r = s.admin.post("/admin/cache/purge", params={"model": "gpt-4o-mini"})
    assert r.status_code == 200 and r.json()["purged"] >= 1
    assert s.on_loop(lambda: s.gateway.semantic.size) == 0
    assert ask(s, PARAPHRASE).headers["x-tollway-cache"] == "miss"

    def short(text: str) -> str:
        r = oa(s).chat.completions.with_raw_response.create(
            model="short", messages=[SYSTEM, {"role": "user", "content": text}], temperature=0)
        return str(r.headers["x-tollway-cache"])
    short(ASKED)
    # A short-lived entry stops answering once it has expired (on every replica: its body
    # has a TTL, and the index checks the expiry).
    wait_until(lambda: short(PARAPHRASE) == "miss", timeout=10)


def test_model_embedder_batches_and_records_its_spend(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(extra=SEMANTIC.replace("ttl_s: 60", "ttl_s: 60, embedder: emb, dims: 16, "
                                          "timeout_ms: 2000"),
                   models_extra="  emb: {provider: oai, model: mock-embedding, "
                                "price: {input: 0.02, output: 0}}\n")
    first = ask(s, ASKED)
    stored(s)
    # The mock's vectors are hashes of the text: only the same text is similar; with the exact
    # cache off, the same question again is a semantic hit at 1.0 through the model embedder.
    r = ask(s, ASKED)
    assert r.headers["x-tollway-cache"] == "semantic"
    assert float(r.headers["x-tollway-cache-similarity"]) == pytest.approx(1.0, abs=1e-3)
    assert r.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert ask(s, PARAPHRASE).headers["x-tollway-cache"] == "miss"
    emb = [q for q in s.mock.requests if q.path == "/v1/embeddings"]
    assert emb and all(q.json["model"] == "mock-embedding" and q.json["dimensions"] == 16
                       and q.headers["authorization"] == "Bearer sk-upstream-openai"
                       for q in emb)
    rows = s.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
    assert next(r for r in rows if r["key"] == "tollway")["cost_usd"] > 0


def test_slow_embedder_is_a_miss_not_a_wait(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(extra=SEMANTIC.replace("ttl_s: 60", "ttl_s: 60, embedder: emb, "
                                          "timeout_ms: 20"),
                   models_extra="  emb: {provider: oai, model: mock-embedding}\n")
    s.mock.settings.latency_ms = 400  # every upstream call, the embedder's included
    r = ask(s, ASKED)
    assert r.headers["x-tollway-cache"] == "miss"
    assert s.metric("tollway_cache_requests_total", kind="semantic", result="timeout") == 1
    lookup = s.metric("tollway_cache_lookup_seconds_sum", kind="semantic")
    assert lookup < 0.2  # the 20 ms deadline, not the embedder's 400 ms
    # A lookup that gave up stores nothing (embedding it again would add to the backlog).
    wait_until(lambda: s.metric("tollway_requests_total", model="gpt-4o-mini") == 1)
    assert s.on_loop(lambda: s.gateway.semantic.size) == 0


def test_redis_down_is_a_miss(make_stack, redis_server) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(extra=SEMANTIC, backend="redis", redis_url=redis_server.url)
    ask(s, ASKED)
    stored(s)
    redis_server.stop()
    try:
        r = ask(s, PARAPHRASE)  # the body can't be fetched: a miss, answered upstream
        assert r.status_code == 200 and r.headers["x-tollway-cache"] == "miss"
    finally:
        redis_server.start()


def test_model_embedder_batches(make_stack) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    s = make_stack(extra=SEMANTIC.replace("ttl_s: 60", "ttl_s: 60, embedder: emb, "
                                          "timeout_ms: 5000, batch_size: 4, batch_ms: 3000"),
                   models_extra="  emb: {provider: oai, model: mock-embedding}\n")
    questions = [f"What is the status of ticket {n}?" for n in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda q: ask(s, q), questions))
    assert all(a.headers["x-tollway-cache"] == "miss" for a in answers)
    lookups = [q.json["input"] for q in s.mock.requests if q.path == "/v1/embeddings"]
    assert sorted(lookups[0]) == sorted(questions)  # four lookups, one call


def test_two_processes_share_entries(tmp_path, redis_server) -> None:  # type: ignore[no-untyped-def]
    """A replica started after an entry was stored catches up from the stream; a replica
    already running follows its tail. Neither ever stores here (no-store), so every hit it
    serves is the other's entry."""
    import subprocess
    import sys

    from tests.conftest import free_port
    from tests.e2e.test_guards_redis import Gateways
    from tests.test_serve import wait_http

    port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "tollway.testing.mock_provider",
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    mock_url = f"http://127.0.0.1:{port}"
    extra = ("cache: {semantic: {enabled: true, ttl_s: 60, threshold: 0.87}}\n"
             "routing: [{name: sem, when: {model: gpt-4o-mini}, semantic_cache: true}]")
    made: list[Gateways] = []
    try:
        wait_http(mock_url + "/v1/models")
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        made.append(Gateways(tmp_path / "a", mock_url, redis_server.url, extra, n=1))
        a = made[0]
        msgs = [SYSTEM, {"role": "user", "content": ASKED}]
        first = a.client(0).chat.completions.create(model="gpt-4o-mini", messages=msgs,
                                                    temperature=0)

        def served_by(g: Gateways, text: str, content: str) -> bool:
            r = g.client(0, default_headers={"x-tollway-cache": "no-store"}).chat.completions.\
                with_raw_response.create(model="gpt-4o-mini", temperature=0,
                                         messages=[SYSTEM, {"role": "user", "content": text}])
            return r.headers["x-tollway-cache"] == "semantic" and (
                r.parse().choices[0].message.content == content)
        answer = first.choices[0].message.content or ""
        wait_until(lambda: served_by(a, PARAPHRASE, answer))  # stored and published
        made.append(Gateways(tmp_path / "b", mock_url, redis_server.url, extra, n=1))
        b = made[1]
        assert served_by(b, PARAPHRASE, answer)  # caught up before it answered /healthz
        # And the other way round, while both run: b stores, a serves.
        later = b.client(0).chat.completions.create(
            model="gpt-4o-mini", temperature=0,
            messages=[SYSTEM, {"role": "user", "content": "How do I update the credit card "
                               "on file?"}])
        wait_until(lambda: served_by(a, "How can I update the credit card on file?",
                                     later.choices[0].message.content or ""))
    finally:
        for g in made:
            g.close()
        mock.terminate()
        mock.wait(10)


COLLAPSED = [  # before: each served the first one's answer at similarity 1.0000
    ("How do you know you are in love with someone?",
     ["What is love?", "Why should I love myself?", "Do you love me?"]),
    ("Which Mac should I buy, and why?", ["Why should I buy a Mac?"]),
    ("How do palm trees grow coconuts?", ["Do coconuts grow on palm trees?"]),
]


def test_short_distinct_questions_do_not_collapse(sem: Stack) -> None:
    """Content words alone made these one bag ("love"; "buy mac"; "coconuts grow palm
    trees"); question words and order now count. Even at the old fixed threshold they miss,
    and none of them comes near 1.0."""
    s = sem
    from tollway.cache.semantic import WordLlamaEmbedder
    from tollway.cache.semantic.recipe import Recipe

    embedder = WordLlamaEmbedder()
    n = 0
    for cached, others in COLLAPSED:
        assert ask(s, cached).headers["x-tollway-cache"] == "miss"
        n += 1
        stored(s, n)
        for other in others:
            r = ask(s, other)
            assert r.headers["x-tollway-cache"] == "miss", other
            a, b = Recipe().vectors(embedder, [cached, other])
            assert float(a @ b) < 0.86, other  # measured 0.68-0.85 (before: 1.0000)
            n += 1
            stored(s, n)
