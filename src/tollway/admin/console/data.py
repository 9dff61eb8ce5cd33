"""What the console's pages show, gathered from the State and the metrics: the same sources
the admin API answers from, so the two never disagree."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tollway.aio import cancel

if TYPE_CHECKING:
    from tollway.gateway import Gateway

SAMPLE_EVERY_S = 5.0
SAMPLES = 720  # an hour at 5 s


def day_start(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def month_start(now: float) -> float:
    d = datetime.fromtimestamp(now, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


def metric_totals(gw: Gateway) -> dict[str, Any]:
    """Sums of this process's counters the overview shows (requests, refusals by reason,
    loops, cache savings)."""
    out: dict[str, Any] = {"requests": 0.0, "cost": 0.0, "savings": 0.0, "loops": 0.0,
                           "refusals": {}, "cache": {}}
    by_status: dict[str, float] = {}
    for family in gw.metrics.registry.collect():
        for s in family.samples:
            if not s.name.endswith("_total"):
                continue
            if s.name == "tollway_requests_total":
                out["requests"] += s.value
                status = s.labels.get("status", "")
                if status[:1] in ("4", "5"):
                    by_status[status] = by_status.get(status, 0.0) + s.value
            elif s.name == "tollway_cost_usd_total":
                out["cost"] += s.value
            elif s.name == "tollway_cache_savings_usd_total":
                out["savings"] += s.value
            elif s.name == "tollway_loops_detected_total":
                out["loops"] += s.value
            elif s.name == "tollway_cache_requests_total":
                kind = out["cache"].setdefault(s.labels.get("kind", ""), {})
                result = s.labels.get("result", "")
                kind[result] = kind.get(result, 0.0) + s.value
    out["refusals"] = dict(sorted(by_status.items()))
    return out


class Sampler:
    """Requests and spend per interval for the overview's chart: this process's counters,
    sampled every few seconds for the last hour."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.points: deque[tuple[float, float, float]] = deque(maxlen=SAMPLES)
        self._last: tuple[float, float, float] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    def sample(self) -> None:
        t = metric_totals(self.gw)
        now = time.time()
        if self._last is not None:
            dt = max(1e-6, now - self._last[0])
            self.points.append((now, (t["requests"] - self._last[1]) / dt,
                                (t["cost"] - self._last[2]) * 60 / dt))
        self._last = (now, t["requests"], t["cost"])

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_EVERY_S)

    def series(self) -> list[list[float]]:
        pts = list(self.points)
        return [[p[0] for p in pts], [round(p[1], 3) for p in pts],
                [round(p[2], 6) for p in pts]]


async def overview(gw: Gateway) -> dict[str, Any]:
    now = time.time()
    today, month = day_start(now), month_start(now)
    out: dict[str, Any] = {"spend": {}}
    for dim in ("team", "agent", "model"):
        rows = await gw.state.ledger.spend(dim, today)
        out["spend"][dim] = {"today": [r.to_dict() for r in rows]}
        out["spend"][dim]["month"] = [
            r.to_dict() for r in await gw.state.ledger.spend(dim, month)]
    out["today_usd"] = round(sum(r["cost_usd"] for r in out["spend"]["agent"]["today"]), 10)
    out["month_usd"] = round(sum(r["cost_usd"] for r in out["spend"]["agent"]["month"]), 10)
    breakers = await gw.state.breakers.views()
    out["breakers_open"] = sorted(t for t, v in breakers.items() if v.state != "closed")
    out["totals"] = metric_totals(gw)
    approvals = await gw.state.tools.approvals()
    out["pending"] = sum(1 for a in approvals if a.to_dict()["status"] == "pending")
    return out


async def agents(gw: Gateway) -> list[dict[str, Any]]:
    """Each configured agent: spend today and this month against its budget, paused or not."""
    now = time.time()
    flags = await gw.state.flags.all()
    paused = set(flags.get("agent", []))
    today = {r.key: r for r in await gw.state.ledger.spend("agent", day_start(now))}
    month = {r.key: r for r in await gw.state.ledger.spend("agent", month_start(now))}
    cfg = gw.config
    rows = []
    for name, agent in sorted(cfg.agents.items()):
        budget = cfg.budgets.agents.get(name)
        rl = cfg.rate_limits.agents.get(name) or cfg.rate_limits.default_agent
        rows.append({
            "name": name, "team": agent.team, "paused": name in paused,
            "today_usd": today[name].cost_usd if name in today else 0.0,
            "month_usd": month[name].cost_usd if name in month else 0.0,
            "requests_today": today[name].requests if name in today else 0,
            "budget_usd": budget.usd if budget is not None else None,
            "budget_period": budget.period if budget is not None else None,
            "rpm": getattr(rl, "rpm", None), "tpm": getattr(rl, "tpm", None),
            "keys": len(agent.keys)})
    return rows


def config_summary(gw: Gateway) -> dict[str, Any]:
    cfg = gw.config
    return {"models": sorted(cfg.models), "providers": sorted(cfg.providers),
            "agents": len(cfg.agents), "routing": [r.name for r in cfg.routing],
            "state": cfg.state.backend, "workers": cfg.server.workers,
            "tools": sorted(cfg.tools), "mcp_servers": sorted(cfg.mcp_servers),
            "semantic": cfg.cache.semantic.enabled, "exact": cfg.cache.exact.enabled,
            "operators": {n: o.role for n, o in sorted(cfg.operators.items())}}
