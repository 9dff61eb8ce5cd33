"""The semantic cache's learned error bound, end to end through the OpenAI SDK, on both state
backends: the upstream's answer is a function of the question's meaning (a paraphrase gets
the same answer, a near miss another), the traffic is a stream of paraphrases and near
misses, and the cache starts knowing nothing. It serves nothing until its judged
explorations bound the error, then the wrong answers it serves stay within max_error_rate
while its hits grow. The admin API shows the evidence."""

from __future__ import annotations

import random
from collections.abc import Callable

import openai

from tests.conftest import Stack

DELTA = 0.05
CONFIG = f"""cache: {{semantic: {{enabled: true, ttl_s: 600, max_error_rate: {DELTA}}}}}
routing: [{{name: sem, when: {{model: gpt-4o-mini}}, semantic_cache: true}}]
"""
VERBS = ["reset", "change", "delete", "export", "cancel", "rename", "update", "enable"]
THINGS = ["password", "email address", "invoice", "subscription", "api key", "profile photo",
          "billing address", "team", "webhook", "backup"]
FORMS = ["How do I {v} my {t}?", "How can I {v} my {t}?", "What's the way to {v} my {t}?",
         "how do i {v} my {t}", "Please tell me how to {v} my {t}."]
# Near misses no guard sees, the same words asking other things: each its own answer. "How
# often should I..." scores 0.86-0.92 against "How do I...", "What happens if I..." 0.86
# against "What's the way to...": above the floor, so the cache must learn them.
OTHERS = {"often": "How often should I {v} my {t}?", "what-if": "What happens if I {v} my {t}?",
          "why": "Why should I {v} my {t}?"}


def meaning(v: str, t: str, kind: str) -> str:
    if kind == "how":
        return f"To {v} your {t}, open Settings, choose {t.title()} and press {v.title()}."
    return f"({kind}) About {v} and your {t}: it depends on how you use it."


def test_served_error_stays_within_the_bound_while_hits_grow(
        make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack(extra=CONFIG)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)
    rng = random.Random(14)
    served = wrong = 0
    hits = [0] * 4
    total = 800
    for i in range(total):
        v, t = rng.choice(VERBS[:5]), rng.choice(THINGS[:6])  # 120 meanings
        kind = "how" if rng.random() < 0.6 else rng.choice(list(OTHERS))
        expected = meaning(v, t, kind)
        asked = (rng.choice(FORMS) if kind == "how" else OTHERS[kind]).format(v=v, t=t)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0,
            messages=[{"role": "user", "content": asked}],
            extra_headers={"x-mock-reply": expected})
        if raw.headers["x-tollway-cache"] == "semantic":
            served += 1
            hits[i * 4 // total] += 1
            wrong += raw.parse().choices[0].message.content != expected
            assert 0 < float(raw.headers["x-tollway-cache-confidence"]) <= 1
    # measured over 8 runs: 360-394 served, none wrong, hits per quarter 0 first (the bound
    # needs 103 clean verdicts at 5%), 134-160 last
    assert served > 300
    assert wrong / served <= DELTA
    assert hits[0] < hits[3]  # the cache starts knowing nothing and learns
    summary = s.admin.get("/admin/cache/semantic").json()
    learned = summary["models"]["gpt-4o-mini"]
    assert learned["verdicts"] > 100 and learned["threshold"] is not None
    assert learned["observed_error"] <= DELTA
    assert s.metric("tollway_semantic_decisions_total", model="gpt-4o-mini",
                    decision="explore") > 0
    assert s.metric("tollway_semantic_verdicts_total", model="gpt-4o-mini",
                    verdict="wrong") > 0


def test_replicas_learn_from_each_others_verdicts(tmp_path, redis_server) -> None:  # type: ignore[no-untyped-def]
    """With Redis state the verdicts travel with the entries: a replica started after
    another learned serves from the first request on, and what it judges the other knows."""
    import subprocess
    import sys

    from tests.conftest import free_port
    from tests.e2e.test_guards_redis import Gateways
    from tests.e2e.test_stream_cuts import wait_until
    from tests.test_serve import wait_http

    port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "tollway.testing.mock_provider",
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    made: list[Gateways] = []

    def ask(g: Gateways, v: str, t: str, form: str) -> str:
        raw = g.client(0).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0,
            messages=[{"role": "user", "content": form.format(v=v, t=t)}],
            extra_headers={"x-mock-reply": meaning(v, t, "how")})
        return raw.headers["x-tollway-cache"]

    def learned(g: Gateways) -> dict:  # type: ignore[type-arg]
        return g.admin(0, "GET", "/admin/cache/semantic").json()[  # type: ignore[no-any-return]
            "models"].get("gpt-4o-mini", {"verdicts": 0})

    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        made.append(Gateways(tmp_path / "a", f"http://127.0.0.1:{port}", redis_server.url,
                             CONFIG, n=1))
        a = made[0]
        rng = random.Random(3)
        for _ in range(300):
            ask(a, rng.choice(VERBS[:5]), rng.choice(THINGS[:6]), rng.choice(FORMS))
        taught = learned(a)
        assert taught["threshold"] is not None
        made.append(Gateways(tmp_path / "b", f"http://127.0.0.1:{port}", redis_server.url,
                             CONFIG, n=1))
        b = made[1]
        assert learned(b)["verdicts"] == taught["verdicts"]  # caught up before it served
        served = [ask(b, rng.choice(VERBS[:5]), rng.choice(THINGS[:6]), rng.choice(FORMS))
                  for _ in range(20)]
        assert served.count("semantic") >= 10  # no exploring from scratch on b
        for _ in range(100):  # b's own verdicts reach a
            ask(b, rng.choice(VERBS[5:]), rng.choice(THINGS[6:]), rng.choice(FORMS))
        wait_until(lambda: learned(a)["verdicts"] == learned(b)["verdicts"] >
                   taught["verdicts"])
    finally:
        for g in made:
            g.close()
        mock.terminate()
        mock.wait(10)


def test_a_judge_model_decides_when_the_answers_differ(
        make_any_stack: Callable[..., Stack]) -> None:
    """judge.kind model: answers that differ in wording go to a cheap model (here `fast`,
    the mock answering YES); its verdicts count, and its spend is the gateway's own."""
    s = make_any_stack(extra=CONFIG.replace(
        "max_error_rate: 0.05}", "max_error_rate: 0.05, judge: {kind: model, model: fast}}"))
    s.mock.settings.reply = "YES"  # what the judge model says (the asks set their own)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)
    rng = random.Random(5)
    for i in range(40):
        v, t = rng.choice(VERBS[:2]), rng.choice(THINGS[:2])
        client.chat.completions.create(
            model="gpt-4o-mini", temperature=0,
            messages=[{"role": "user", "content": rng.choice(FORMS).format(v=v, t=t)}],
            extra_headers={"x-mock-reply": meaning(v, t, "how") + f" (#{i})"})  # reworded
    assert s.metric("tollway_semantic_verdicts_total", model="gpt-4o-mini",
                    verdict="correct") > 10
    judge = [r for r in s.mock.requests if (r.json or {}).get("model") == "gpt-4.1-nano"]
    assert judge and "Reply with one word" in judge[0].json["messages"][0]["content"]
    rows = {r["key"]: r for r in s.admin.get("/admin/spend", params={"by": "agent"}).json()[
        "rows"]}
    assert rows["tollway"]["cost_usd"] > 0 and rows["tollway"]["requests"] == len(judge)
