"""The Grafana dashboard (deploy/grafana/tollway-dashboard.json, shipped by the Helm chart):
well-formed for provisioning, a panel for every topic the issue names, and every metric and
label its queries use exported by a real gateway's /metrics after real traffic (SDK calls,
a stream, a cache hit, a failing tool and upstream with circuit breakers)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Loop, Stack

from tollway.testing.mock_tools import MockTools

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "tollway-dashboard.json"
# Labels Prometheus adds to every series it scrapes: queries may use them too.
TARGET_LABELS = {"job", "instance"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created")}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # a collapsed row keeps its panels inside


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in panels(dash)
           for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']}", q))
    return out


# --- a little PromQL reading -------------------------------------------------------------------

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"\b((?:tollway|process)_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\")")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*(tollway_\w+)\s*(?:\{[^}]*\})?\s*,\s*(\w+)\s*\)")
QUANTILE = re.compile(r"histogram_quantile\(\s*([0-9.]+)\s*,[^$]*?\b(tollway_\w+)_bucket")


@dataclass
class Query:
    where: str
    expr: str
    metrics: set[str]  # series names, as written: tollway_cost_usd_total, ..._bucket
    labels: set[str]  # every label named in a matcher or a grouping
    matchers: list[tuple[str, str, str, str]]  # (metric, label, op, value)


def read(where: str, expr: str) -> Query:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for ch in STRING.sub('""', expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            assert depth[closing[ch]] >= 0, f"{where}: unbalanced {ch!r} in {expr}"
    assert not any(depth.values()), f"{where}: unbalanced brackets in {expr}"
    metrics: set[str] = set()
    labels: set[str] = set()
    matchers = []
    for m in SELECTOR.finditer(expr):
        name, braces = m.group(1), m.group(2) or ""
        if STRING.sub("", expr[:m.start()]).count('"') % 2:  # inside a string
            continue
        metrics.add(name)
        for lm in MATCHER.finditer(braces):
            labels.add(lm.group(1))
            matchers.append((name, lm.group(1), lm.group(2), json.loads(lm.group(3))))
    without_strings = STRING.sub('""', expr)
    for g in GROUPING.finditer(without_strings):
        labels |= {x.strip() for x in g.group(1).split(",") if x.strip()}
    for lv in LABEL_VALUES.finditer(expr):
        labels.add(lv.group(2))
    return Query(where, expr, metrics, labels, matchers)


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def all_queries(dash: dict[str, Any]) -> list[Query]:
    return [read(w, e) for w, e in queries(dash)]


# --- the dashboard as Grafana provisions it --------------------------------------------------

def test_dashboard_is_provisionable(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "tollway-overview" and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert "__inputs" not in dash  # provisioning does not fill import-time inputs
    assert dash.get("id") is None  # Grafana assigns it
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "agent", "team", "model"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_panels_are_well_formed_and_do_not_overlap(dash: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), p
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}"


def test_every_query_filters_by_job(all_queries: list[Query]) -> None:
    """One Prometheus may scrape several tollway releases: every panel follows $job."""
    for q in all_queries:
        if q.where.startswith("panel"):
            for metric in q.metrics:
                assert any(m == metric and label == "job" and value == "$job"
                           for m, label, _, value in q.matchers), (q.where, metric)


def uses(q: Query, metric: str, by: str | None = None) -> bool:
    return metric in q.metrics and (by is None or re.search(
        rf"\bby\s*\(([^)]*\b{by}\b[^)]*)\)", q.expr) is not None)


def quantiles_of(qs: list[Query], metric: str) -> set[float]:
    return {float(m.group(1)) for q in qs for m in QUANTILE.finditer(q.expr)
            if m.group(2) == metric}


def test_a_panel_for_every_topic(all_queries: list[Query]) -> None:
    qs = [q for q in all_queries if q.where.startswith("panel")]

    def some(pred: Callable[[Query], bool]) -> bool:
        return any(pred(q) for q in qs)

    def breaker(op: str) -> Callable[[Query], bool]:
        return lambda q: any(m == "tollway_breaker_state" and lab == "target" and o == op
                             and v == "tool:.*" for m, lab, o, v in q.matchers)

    topics: dict[str, Callable[[Query], bool]] = {
        "spend by agent": lambda q: uses(q, "tollway_cost_usd_total", "agent"),
        "spend by team": lambda q: uses(q, "tollway_cost_usd_total", "team"),
        "spend by model": lambda q: uses(q, "tollway_cost_usd_total", "model"),
        "cost per session distribution": lambda q: uses(q, "tollway_session_cost_usd_bucket",
                                                        "le"),
        "tokens": lambda q: uses(q, "tollway_tokens_total", "type"),
        "cache hit rate": lambda q: any(
            m == "tollway_cache_requests_total" and (lab, op, v) == ("result", "=", "hit")
            for m, lab, op, v in q.matchers) and "/" in q.expr,
        "cache savings": lambda q: uses(q, "tollway_cache_savings_usd_total"),
        "loops halted": lambda q: uses(q, "tollway_loops_detected_total"),
        "budget rejections": lambda q: uses(q, "tollway_budget_rejections_total"),
        "rate-limit rejections": lambda q: uses(q, "tollway_ratelimit_rejections_total"),
        "loops halted, not alerted": lambda q: any(
            m == "tollway_loops_detected_total" and (lab, op, v) == ("action", "=", "halt")
            for m, lab, op, v in q.matchers),
        "refusals apart from failures": lambda q: any(
            m == "tollway_requests_total" and lab == "status" and op == "=~" and "402" in v
            for m, lab, op, v in q.matchers),
        "state errors": lambda q: uses(q, "tollway_state_errors_total"),
        "stream interruptions": lambda q: uses(q, "tollway_stream_interruptions_total"),
        "config reloads": lambda q: uses(q, "tollway_config_reloads_total"),
        "policy denials": lambda q: uses(q, "tollway_policy_denials_total"),
        "tool duration": lambda q: uses(q, "tollway_tool_duration_seconds_bucket"),
        "approvals": lambda q: uses(q, "tollway_approvals_total"),
        "queue wait": lambda q: uses(q, "tollway_queue_wait_seconds_bucket"),
        "process memory": lambda q: uses(q, "process_resident_memory_bytes"),
        "breaker state per upstream": breaker("!~"),
        "breaker state per tool": breaker("=~"),
    }
    missing = [t for t, pred in topics.items() if not some(pred)]
    assert not missing, f"no panel for: {missing}"
    for metric in ("tollway_request_duration_seconds", "tollway_overhead_seconds",
                   "tollway_time_to_first_token_seconds"):
        assert {0.5, 0.99} <= quantiles_of(qs, metric), f"p50 and p99 of {metric}"


# --- against a real gateway's /metrics ------------------------------------------------------------

@pytest.fixture
def tools(bg_loop: Loop) -> Iterator[MockTools]:
    server = MockTools()
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # a condition the gateway reaches asynchronously, not a fixed wait
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def busy(make_stack: Callable[..., Stack], tools: MockTools) -> Stack:
    """A gateway that has served the kinds of traffic the dashboard graphs."""
    extra = (
        "cache: {exact: {enabled: true, ttl_s: 60}}\n"
        # an agent whose every request is refused: never charged, never in the cost metric
        "budgets: {agents: {research-agent: {usd: 0.0000001, period: day}}}\n"
        "tools:\n"
        f'  flaky: {{url: "{tools.base_url}/status/500", '
        "breaker: {consecutive_failures: 1, open_s: 60}}\n")
    models = "  brittle: {provider: dead, breaker: {consecutive_failures: 1, open_s: 60}}\n"
    s = make_stack(extra=extra, models_extra=models)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)
    msg = [{"role": "user", "content": "List three primary colours"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=msg, temperature=0)
    for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream a story"}],
            stream=True, stream_options={"include_usage": True}):
        assert chunk is not None
    wait_until(lambda: client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msg, temperature=0).headers["x-tollway-cache"] == "exact")
    with pytest.raises(openai.APIError):
        client.chat.completions.create(model="brittle", messages=msg)
    r = httpx.get(s.url + "/tools/flaky", headers={"Authorization": "Bearer sk-tw-support"},
                  timeout=10)
    assert r.status_code >= 500
    refused = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-research", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        refused.chat.completions.create(model="gpt-4o-mini", messages=msg, max_tokens=100)
    assert e.value.status_code == 402
    wait_until(lambda: s.metric("tollway_breaker_state", target="tool:flaky") == 2)
    wait_until(lambda: s.metric("tollway_breaker_state", target="dead/brittle") == 2)
    return s


def exported(stack: Stack) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From /metrics: series name -> labels seen on it (every series name a registered
    metric can have, samples or not: an unused labelled metric shows only HELP and TYPE),
    and series name -> label names the gateway declares for it."""
    text = httpx.get(stack.url + "/metrics").text
    seen: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(fam.type, ("",)):
            seen.setdefault(fam.name + suffix, set())
        for s in fam.samples:
            seen.setdefault(s.name, set()).update(s.labels)
    declared: dict[str, set[str]] = {}
    for m in vars(stack.gateway.metrics).values():
        if isinstance(m, MetricWrapperBase):
            for suffix in SUFFIXES[m._type]:
                extra = {"le"} if suffix == "_bucket" else set()
                declared[m._name + suffix] = set(m._labelnames) | extra
    return seen, declared


def test_every_query_names_an_exported_metric_and_its_labels(
        busy: Stack, all_queries: list[Query]) -> None:
    seen, declared = exported(busy)
    assert "tollway_requests_total" in seen and "tollway_cost_usd_total" in declared
    problems = []
    for q in all_queries:
        assert q.metrics, f"{q.where}: no tollway metric in {q.expr}"
        for metric in q.metrics:
            if metric not in seen:
                problems.append(f"{q.where}: {metric} is not on /metrics")
                continue
            have = declared.get(metric, set()) | seen[metric] | TARGET_LABELS
            for label in sorted(q.labels - have):
                problems.append(f"{q.where}: {metric} has no label {label!r}")
    assert not problems, "\n".join(problems)


def test_variables_list_an_agent_that_was_only_refused(busy: Stack, dash: dict[str, Any],
                                                      ) -> None:
    text = httpx.get(busy.url + "/metrics").text
    labels: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            for k, v in smp.labels.items():
                labels.setdefault(f"{smp.name}/{k}", set()).add(v)
    assert "research-agent" not in labels.get("tollway_cost_usd_total/agent", set())
    for var in dash["templating"]["list"]:
        if var["name"] in ("agent", "team"):
            m = LABEL_VALUES.search(var["definition"])
            assert m is not None, var["definition"]
            values = labels.get(f"{m.group(1)}/{m.group(2)}", set())
            want = "research-agent" if var["name"] == "agent" else "research"
            assert want in values, f"${var['name']} would not list {want}"


def test_queries_match_real_series(busy: Stack, all_queries: list[Query]) -> None:
    """After that traffic the main panels have data, and every equality matcher on a
    label that has samples names a value tollway really writes (hit, tool:..., ...)."""
    seen, _ = exported(busy)
    text = httpx.get(busy.url + "/metrics").text
    values: dict[tuple[str, str], set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            for k, v in s.labels.items():
                values.setdefault((s.name, k), set()).add(v)
    for metric in ("tollway_cost_usd_total", "tollway_tokens_total", "tollway_requests_total",
                   "tollway_request_duration_seconds_bucket", "tollway_overhead_seconds_bucket",
                   "tollway_time_to_first_token_seconds_bucket",
                   "tollway_upstream_duration_seconds_bucket", "tollway_cache_requests_total",
                   "tollway_cache_savings_usd_total", "tollway_breaker_state",
                   "tollway_tool_calls_total", "tollway_session_cost_usd_bucket"):
        assert metric in seen and any((metric, k) in values for k in seen[metric] | {"le"}), \
            f"{metric} has no samples"
    checked = 0
    for q in all_queries:
        for metric, label, op, value in q.matchers:
            if "$" in value or (metric, label) not in values:
                continue
            found = values[(metric, label)]
            if op == "=":
                assert value in found, f"{q.where}: no {metric}{{{label}={value!r}}}"
            elif op == "=~":
                assert any(re.fullmatch(value, v) for v in found), (q.where, metric, value)
            elif op == "!~":
                assert any(not re.fullmatch(value, v) for v in found), (q.where, metric, value)
            checked += 1
    assert checked >= 3


def test_the_dashboard_reader_catches_mistakes() -> None:
    """The checks above rely on this reader; it must see names, labels and strings right."""
    q = read("t", 'sum by (agent, team) (rate(tollway_cost_usd_total{job=~"$job", '
                  'model="tollway_not_a_metric"}[5m])) / sum(tollway_x_total)')
    assert q.metrics == {"tollway_cost_usd_total", "tollway_x_total"}
    assert q.labels == {"agent", "team", "job", "model"}
    assert ("tollway_cost_usd_total", "model", "=", "tollway_not_a_metric") in q.matchers
    with pytest.raises(AssertionError, match="unbalanced"):
        read("t", "sum(rate(tollway_cost_usd_total[5m])")
