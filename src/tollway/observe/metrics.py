"""Prometheus metrics. Labels are bounded by the config: agent, team, model, provider, endpoint.

Never a session id, request id or prompt as a label. Children are cached per label tuple
because prometheus-client's `.labels()` lookup costs more than the increment itself.

Under `tollway serve --workers N` the supervisor sets PROMETHEUS_MULTIPROC_DIR before a
worker imports prometheus-client, which then keeps every value in a per-process mmap file
(whatever registry the metric is in); `exposition()` merges the files of all workers, so any
worker's /metrics reports the whole instance. Without the variable nothing changes: values
live in memory and the registry below is exposed as is. One Metrics per process in that mode
(two would write the same keys of the same file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import values as _values

if TYPE_CHECKING:
    from tollway.exchange import Exchange

LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1)


class Metrics:
    def __init__(self) -> None:
        # The `_created` twin of every counter and histogram (46 families) doubles the series
        # and no panel or alert reads it.
        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=False)
        # prometheus-client picks in-memory or mmap values once, when it is first imported.
        self.multiprocess: bool = bool(getattr(_values.ValueClass, "_multiprocess", False))
        self._merged: CollectorRegistry | None = None
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            self._merged = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(self._merged)
        # process_* (memory, CPU, open files) and python_info: the worker that answers the
        # scrape, under --workers
        ProcessCollector(registry=self._merged or r)
        PlatformCollector(registry=self._merged or r)

        def mode(how: str) -> dict[str, Any]:
            """How the workers' values of a gauge are merged (multiprocess mode only)."""
            return {"multiprocess_mode": how} if self.multiprocess else {}

        self.requests = Counter(
            "tollway_requests", "Requests answered, by outcome.",
            ["endpoint", "agent", "team", "model", "provider", "status"], registry=r)
        self.duration = Histogram(
            "tollway_request_duration_seconds", "Whole request time seen by the client.",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram(
            "tollway_upstream_duration_seconds", "Time waiting on the upstream provider.",
            ["provider", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(
            "tollway_time_to_first_token_seconds", "Streams: request start to first content.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram(
            "tollway_overhead_seconds", "Time spent in the gateway itself (total minus upstream).",
            ["endpoint"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter(
            "tollway_tokens", "Tokens by type: input (uncached), output, cached, cache_write.",
            ["agent", "team", "model", "type"], registry=r)
        self.cost = Counter(
            "tollway_cost_usd", "Spend in USD.", ["agent", "team", "model"], registry=r)
        self.inflight = Gauge(
            "tollway_inflight_requests", "Requests in the gateway right now.", registry=r,
            **mode("livesum"))  # every worker's own requests; a dead worker's are gone
        self.stream_interruptions = Counter(
            "tollway_stream_interruptions", "Streams cut short, by who cut them.",
            ["side", "model"], registry=r)
        self.upstream_errors = Counter(
            "tollway_upstream_errors", "Upstream calls that failed without an HTTP answer.",
            ["provider", "kind"], registry=r)
        self.counted_usage = Counter(
            "tollway_usage_counted", "Responses whose usage was counted by tollway because "
            "upstream gave none (cut streams).", ["model"], registry=r)
        self.budget_rejections = Counter(
            "tollway_budget_rejections", "Requests refused with 402 budget_exceeded.",
            ["scope"], registry=r)
        self.budget_remaining = Gauge(
            "tollway_budget_remaining_usd", "What is left of agent, team and global budgets "
            "in the current period, as of the last request.", ["scope", "name"], registry=r,
            **mode("mostrecent"))  # the ledger is shared: the latest reading is the truth
        self.budget_soft_limit = Counter(
            "tollway_budget_soft_limit", "Budgets that crossed budgets.soft_threshold.",
            ["scope"], registry=r)
        self.ratelimit_rejections = Counter(
            "tollway_ratelimit_rejections", "Requests refused with 429.", ["limit"],
            registry=r)
        self.queue_wait = Histogram(
            "tollway_queue_wait_seconds", "Time waiting for an upstream concurrency slot.",
            ["target"], buckets=(.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
            registry=r)
        self.backpressure_rejections = Counter(
            "tollway_backpressure_rejections", "Requests refused with 503: too many in "
            "flight and the wait queue full or too slow.", ["target"], registry=r)
        self.loops_detected = Counter(
            "tollway_loops_detected", "Loops detected, by detector and what was done "
            "(halt: refused 422; alert: let through and logged).",
            ["detector", "agent", "action"], registry=r)
        self.session_cost = Histogram(
            "tollway_session_cost_usd", "What one session (an agent run) cost, observed "
            "when it has been idle for state.session_idle_s.",
            buckets=(.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 25, 50, 100, 500),
            registry=r)
        self.state_errors = Counter(
            "tollway_state_errors", "Calls to the shared state that failed.", ["op"],
            registry=r)
        self.routing_decisions = Counter(
            "tollway_routing_decisions", "Requests a routing rule decided.",
            ["rule", "from_model", "to_model"], registry=r)
        self.fallbacks = Counter(
            "tollway_fallbacks", "Attempts that failed over to the next target.",
            ["from_model", "to_model", "reason"], registry=r)
        self.config_reloads = Counter(
            "tollway_config_reloads", "Config reloads by result (ok, invalid).", ["result"],
            registry=r)
        self.breaker_state = Gauge(
            "tollway_breaker_state", "Circuit breaker per upstream target: 0 closed, "
            "1 half-open, 2 open.", ["target"], registry=r,
            **mode("livemostrecent"))  # shared breakers; every worker refreshes each second
        self.breaker_transitions = Counter(
            "tollway_breaker_transitions", "Circuit breaker state changes.",
            ["target", "from_state", "to_state"], registry=r)
        self.cache_requests = Counter(
            "tollway_cache_requests", "Cache lookups by kind (exact, semantic) and result "
            "(hit, miss, skip; semantic also timeout, busy, error: a miss that did not wait).",
            ["kind", "result"], registry=r)
        self.cache_rejections = Counter(
            "tollway_cache_semantic_rejections", "Semantic candidates over the threshold that "
            "a near-miss guard refused, by rule (number, negation, antonym, quote, code, ...).",
            ["reason"], registry=r)
        self.cache_savings = Counter(
            "tollway_cache_savings_usd", "What the answers served from cache cost when they "
            "were first bought.", ["model"], registry=r)
        self.cache_lookup = Histogram(
            "tollway_cache_lookup_seconds", "Time to look a request up in the cache.",
            ["kind"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.semantic_decisions = Counter(
            "tollway_semantic_decisions", "Semantic candidates by decision: hit (served), "
            "explore (forwarded anyway and judged, billed like a miss), miss.",
            ["model", "decision"], registry=r)
        self.semantic_verdicts = Counter(
            "tollway_semantic_verdicts", "Judged explorations: correct (the stored answer "
            "agreed with the fresh one), wrong, unjudged.", ["model", "verdict"], registry=r)
        self.semantic_threshold = Gauge(
            "tollway_semantic_threshold", "The similarity above which the semantic cache "
            "serves, learned per model for its max_error_rate (1: not enough evidence yet).",
            ["model"], registry=r, **mode("livemax"))
        self.semantic_error = Gauge(
            "tollway_semantic_error_estimate", "Observed share of wrong answers among the "
            "judged candidates the learned threshold serves, per model.", ["model"],
            registry=r, **mode("livemax"))
        self.cache_entries = Gauge(
            "tollway_cache_entries", "Entries in the cache by kind: exact (stored bodies, "
            "refreshed every few seconds) and semantic (vectors in this process's index).",
            ["kind"], registry=r,
            **mode("livemax"))  # each worker reads the same store / catches up the same feed
        self.tool_calls = Counter(
            "tollway_tool_calls", "Tool calls through the gateway (HTTP tools: the tool's name; "
            "MCP: <server>/<tool>) by outcome: ok, tool_error (the tool's own error, not held "
            "against it), failure, breaker_open, denied, loop, budget, rejected (approval).",
            ["tool", "outcome"], registry=r)
        self.tool_duration = Histogram(
            "tollway_tool_duration_seconds", "Tool call duration, as the gateway saw it.",
            ["tool"], buckets=LATENCY_BUCKETS, registry=r)
        self.tool_flagged = Counter(
            "tollway_tool_flagged", "Tool calls in a yellow or red risk zone.",
            ["tool", "zone"], registry=r)
        self.approvals = Counter(
            "tollway_approvals", "Red-zone tool calls by how their approval ended: approved, "
            "rejected, expired.", ["tool", "decision"], registry=r)
        self.policy_denials = Counter(
            "tollway_policy_denials", "Calls refused by a policy or a key's limits, by kind "
            "(model, tool, model_tool_call).", ["kind", "agent"], registry=r)
        self.model_tool_calls = Counter(
            "tollway_model_tool_calls_flagged", "Tool calls a model emitted that the agent may "
            "not use, by action (block, flag).", ["agent", "tool", "action"], registry=r)
        self.usage_invalid = Counter(
            "tollway_upstream_usage_invalid", "Answers whose usage was not a set of token "
            "counts (negative, not a number, cached beyond the prompt): priced from the "
            "gateway's own count instead.", ["provider"], registry=r)
        self.guardrail_checks = Counter(
            "tollway_guardrail_checks", "Texts a guardrail detector looked at, by what came "
            "of it: pass, flag, redact, block, hold.", ["detector", "action"], registry=r)
        self.guardrail_seconds = Histogram(
            "tollway_guardrail_seconds", "Time a detector took on one place of a request "
            "(all its texts).", ["detector"], buckets=OVERHEAD_BUCKETS, registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._per_request: dict[tuple[Any, ...], _Children] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached: cheaper than metric.labels() on the hot path."""
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def observe(self, ex: Exchange, total_s: float) -> None:
        route, up, out, caller = ex.target.route, ex.upstream, ex.outcome, ex.caller
        model = ex.model_name if route else "none"
        provider = up.provider or (route.provider.name if route else "none")
        endpoint = ex.endpoint.name
        # Every child a request touches, looked up once per label set (a request's labels
        # repeat: the same agent, model and outcome, request after request).
        labels = (endpoint, caller.agent, caller.team, model, provider, out.status)
        kids = self._per_request.get(labels)
        if kids is None:
            kids = self._per_request[labels] = _Children(self, *labels)
        kids.requests.inc()
        kids.duration.observe(total_s)
        upstream_s = up.seconds
        if up.started:
            kids.get(_UPSTREAM).observe(upstream_s)
        kids.overhead.observe(max(0.0, total_s - upstream_s))
        if up.first_token_at:
            kids.get(_TTFT).observe(up.first_token_at - ex.started)
        u = out.usage
        if u is not None and ex.endpoint.billable:
            for i, n in enumerate((u.input, u.output, u.cached, u.cache_write)):
                if n > 0:
                    kids.get(i).inc(n)
            if out.cost_usd > 0:
                kids.get(_COST).inc(out.cost_usd)

    def exposition(self) -> bytes:
        """The text format: this process's registry, or every worker's files merged."""
        if self._merged is not None:
            return generate_latest(self._merged)
        return generate_latest(self.registry)


_KINDS = ("input", "output", "cached", "cache_write")
_UPSTREAM, _TTFT, _COST = 4, 5, 6


class _Children:
    """The labelled children one request's observation touches, for one label set; those
    a request may not touch (upstream time, TTFT, each token type, cost) are made when
    first observed, so /metrics shows no series that never had a sample."""

    __slots__ = ("_labels", "_lazy", "_m", "duration", "overhead", "requests")

    def __init__(self, m: Metrics, endpoint: str, agent: str, team: str, model: str,
                 provider: str, status: int) -> None:
        self._m = m
        self._labels = (agent, team, model, provider)
        self.requests = m.child(m.requests, endpoint, agent, team, model, provider, str(status))
        self.duration = m.child(m.duration, endpoint, model)
        self.overhead = m.child(m.overhead, endpoint)
        self._lazy: list[Any] = [None] * 7

    def get(self, i: int) -> Any:
        child = self._lazy[i]
        if child is None:
            m = self._m
            agent, team, model, provider = self._labels
            child = self._lazy[i] = (
                m.child(m.tokens, agent, team, model, _KINDS[i]) if i < 4 else
                m.child(m.upstream, provider, model) if i == _UPSTREAM else
                m.child(m.ttft, model) if i == _TTFT else
                m.child(m.cost, agent, team, model))
        return child
