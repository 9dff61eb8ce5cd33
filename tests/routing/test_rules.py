"""Rule matching for every condition, explain, and the committed JSON Schema."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from multidict import CIMultiDict

from tollway.config import ConfigError, load_config_text
from tollway.config.schema import schema_text
from tollway.routing.rules import RouteContext, Router

ROOT = Path(__file__).resolve().parents[2]
BASE = """
providers: {p: {kind: demo}}
models: {big: {provider: p}, small: {provider: p}, canary: {provider: p}}
agents: {bot: {team: support, keys: [k]}}
routing:
"""


def router(rules: str) -> Router:
    return Router(load_config_text(BASE + rules, "g", {}).routing)


def ctx(**kw: object) -> RouteContext:
    base: dict[str, object] = {"agent": "bot", "team": "support", "model": "big"}
    base.update(kw)
    if isinstance(base.get("headers"), dict):
        base["headers"] = CIMultiDict(base["headers"])  # type: ignore[arg-type]
    return RouteContext(**base)  # type: ignore[arg-type]


MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
SUNDAY_23 = datetime(2026, 11, 22, 23, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("when,yes,no", [
    ("{agent: 'b*'}", {}, {"agent": "other"}),
    ("{agent: [x, bot]}", {}, {"agent": "y"}),
    ("{team: support}", {}, {"team": "research"}),
    ("{model: 'b?g'}", {}, {"model": "small"}),
    ("{prompt_tokens: {min: 100, max: 2000}}", {"prompt_tokens": 100},
     {"prompt_tokens": 2000}),
    ("{prompt_tokens: {max: 500}}", {"prompt_tokens": 499}, {"prompt_tokens": 500}),
    ("{tools: true}", {"tools": True}, {"tools": False}),
    ("{tools: false}", {"tools": False}, {"tools": True}),
    ("{stream: true}", {"stream": True}, {"stream": False}),
    ("{tags: [urgent, prod]}", {"tags": ("prod", "urgent", "x")}, {"tags": ("urgent",)}),
    ("{headers: {x-env: 'prod*'}}", {"headers": {"X-Env": "production"}},
     {"headers": {"x-env": "dev"}}),
    ("{budget_spent: {scope: agent, min: 0.8}}", {"budget_shares": {"agent": 0.8}},
     {"budget_shares": {"agent": 0.79}}),
    ("{budget_spent: {scope: session, min: 0.5, max: 0.9}}",
     {"budget_shares": {"session": 0.6}}, {"budget_shares": {"session": 0.95}}),
    ("{time: {from: '09:00', to: '18:00', days: [mon, tue, wed, thu, fri]}}",
     {"now": MONDAY_10}, {"now": SUNDAY_23}),
    ("{time: {from: '22:00', to: '06:00'}}", {"now": SUNDAY_23}, {"now": MONDAY_10}),
    ("{time: {from: '11:00', to: '12:00', tz: Europe/Paris}}", {"now": MONDAY_10},
     {"now": SUNDAY_23}),
])
def test_every_condition(when: str, yes: dict, no: dict) -> None:
    r = router(f"  - {{name: r, when: {when}, to: small}}\n")
    assert r.decide(ctx(**yes)) is not None
    assert r.decide(ctx(**no)) is None


def test_first_match_wins_and_split_weights() -> None:
    r = router("  - {name: a, when: {agent: nobody}, to: small}\n"
               "  - {name: b, split: [{model: big, weight: 95}, {model: canary, weight: 5}]}\n"
               "  - {name: c, to: small}\n")
    rule = r.decide(ctx())
    assert rule is not None and rule.name == "b"
    r.rng.seed(7)
    picks = [rule.pick(r.rng) for _ in range(1000)]
    assert 30 <= picks.count("canary") <= 70


def test_impossible_rules_are_config_errors() -> None:
    with pytest.raises(ConfigError) as e:
        load_config_text(BASE + "  - {name: a, to: nope}\n", "g.yaml", {})
    assert "g.yaml:6: routing[0].to" in str(e.value) and "'nope'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config_text(BASE + "  - {name: a, to: small, when: {colour: red}}\n", "g.yaml",
                         {})
    assert "routing[0].when.colour: unknown key" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config_text(BASE + "  - {name: a, to: small}\n  - {name: a, to: big}\n", "g", {})
    assert "already named" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config_text(BASE + "  - {name: a, to: small, split: [{model: big, weight: 1}]}\n",
                         "g", {})
    assert "either `to` or `split`" in str(e.value)
    with pytest.raises(ConfigError):
        load_config_text(BASE + "  - {name: a, to: small, when: {time: {tz: Mars/Base}}}\n",
                         "g", {})


def test_fifty_rules_cost_microseconds() -> None:
    import time

    rules = "".join(f"  - {{name: r{i}, when: {{agent: 'agent-{i}-*', prompt_tokens: "
                    f"{{min: {i}}}, tools: true}}, to: small}}\n" for i in range(50))
    r = router(rules)
    c = ctx(prompt_tokens=1000, tools=True)
    n = 2000
    start = time.process_time()
    for _ in range(n):
        r.decide(c)
    per = (time.process_time() - start) / n * 1e6
    assert per < 100  # a loose ceiling for a test (about 5 µs here); bench/ measures it


def test_explain_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(BASE + "  - {name: cheap-triage, when: {prompt_tokens: {max: 500}, "
                          "tools: false}, to: small, fallbacks: [big]}\n"
                          "  - {name: canary, split: [{model: big, weight: 95}, "
                          "{model: canary, weight: 5}]}\n")
    out = subprocess.run([sys.executable, "-m", "tollway", "explain", "-c", str(cfg),
                          "--agent", "bot", "--model", "big", "--prompt-tokens", "100"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "rule cheap-triage: MATCHES" in out.stdout
    assert "-> small (provider p" in out.stdout and "fallbacks in order: big" in out.stdout
    out = subprocess.run([sys.executable, "-m", "tollway", "explain", "-c", str(cfg),
                          "--agent", "bot", "--model", "big", "--prompt-tokens", "900"],
                         capture_output=True, text=True)
    assert "rule cheap-triage: no (it needs: the prompt has fewer than 500 tokens)" \
        in out.stdout
    out = subprocess.run([sys.executable, "-m", "tollway", "explain", "-c", str(cfg),
                          "--agent", "bot", "--model", "big", "--tools"],
                         capture_output=True, text=True)
    assert "rule cheap-triage: no (it needs: the request offers no tools)" in out.stdout
    assert " is false" not in out.stdout and "None" not in out.stdout
    assert "95.0% -> big" in out.stdout and "5.0% -> canary" in out.stdout


def test_committed_schema_is_current() -> None:
    assert (ROOT / "gateway.schema.json").read_text() == schema_text(), (
        "run `tollway schema -o gateway.schema.json`")
    assert "$schema=./gateway.schema.json" in (ROOT / "gateway.yaml").read_text()
