"""The bodies of the runtime key endpoints, read strictly: every field's type and range is
checked and an unknown field is refused, so a typo ("model" for "models") is a 400 that
names it instead of a key with fewer limits than its maker meant."""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tollway.admin.bodies import read_object
from tollway.config.server import ServerConfig
from tollway.errors import GatewayError
from tollway.protocols.inputs import kind_of

CREATE_USAGE = ('{"agent": "<name>", "expires_in_s": 86400 | "expires": <epoch or ISO-8601>, '
                '"models": ["gpt-4o*"], "tools": ["weather"], "budget_usd_day": 5, '
                '"rpm": 60, "label": "..."}')
ROTATE_USAGE = '{"grace_s": 300} (or no body)'
MAX_GLOBS = 100
MAX_GRACE_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class NewKey:
    agent: str
    expires: float | None
    models: tuple[str, ...] | None
    tools: tuple[str, ...] | None
    budget_usd_day: float | None
    rpm: int | None
    label: str


def bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "bad_key_request", message, param=param)


async def _object(request: web.Request, server: ServerConfig, usage: str,
                  empty_ok: bool = False) -> dict[str, Any]:
    return await read_object(request, server, usage, bad, empty_ok)


def _unknown(body: dict[str, Any], known: tuple[str, ...], usage: str) -> None:
    extra = sorted(k for k in body if k not in known)
    if extra:
        raise bad(f"unknown field(s) {', '.join(map(repr, extra))}: {usage}", extra[0])


def _number(body: dict[str, Any], name: str, low: float, high: float = math.inf,
            low_open: bool = True) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if type(v) not in (int, float) or not math.isfinite(v):  # not a bool, not nan
        raise bad(f"'{name}' must be a number, not {kind_of(v)}", name)
    if (v <= low if low_open else v < low) or v > high:
        lowest = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise bad(f"'{name}' must be {lowest}" + (
            f" and at most {high:g}" if high != math.inf else ""), name)
    return float(v)


def _globs(body: dict[str, Any], name: str) -> tuple[str, ...] | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, list) or len(v) > MAX_GLOBS or not all(
            isinstance(g, str) and 0 < len(g) <= 200 for g in v):
        raise bad(f"'{name}' must be a list of at most {MAX_GLOBS} names or globs "
                  "(non-empty strings of up to 200 characters)", name)
    return tuple(v)


def _expires(body: dict[str, Any], now: float) -> float | None:
    if body.get("expires") is not None and body.get("expires_in_s") is not None:
        raise bad("give 'expires' or 'expires_in_s', not both", "expires")
    if (after := _number(body, "expires_in_s", 0, 10 * 365 * 86400)) is not None:
        return now + after
    v = body.get("expires")
    if v is None:
        return None
    if isinstance(v, str):
        try:
            dt = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as exc:
            raise bad("'expires' must be unix seconds or an ISO-8601 time", "expires") from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.UTC)
        at = dt.timestamp()
    else:
        at = _number(body, "expires", 0) or 0.0
    if at <= now:
        raise bad("'expires' is in the past", "expires")
    return at


async def read_new_key(request: web.Request, server: ServerConfig, agents: set[str],
                       guarded: bool) -> NewKey:
    """POST /admin/keys: the key to make; GatewayError (400) otherwise. `guarded`: whether
    the guard is in the chain, without which a budget or rpm would never be checked."""
    body = await _object(request, server, CREATE_USAGE)
    _unknown(body, ("agent", "expires", "expires_in_s", "models", "tools", "budget_usd_day",
                    "rpm", "label"), CREATE_USAGE)
    agent = body.get("agent")
    if not isinstance(agent, str) or not agent:
        raise bad(f"'agent' is required: the name of an agent of the config: {CREATE_USAGE}",
                  "agent")
    if agent not in agents:
        raise bad(f"no agent {agent[:64]!r} in the config's agents: (a key is for one of "
                  f"{', '.join(sorted(agents)) or 'none'})", "agent")
    rpm = body.get("rpm")
    if rpm is not None and (type(rpm) is not int or not 1 <= rpm <= 10_000_000):
        raise bad("'rpm' must be a whole number of requests per minute, 1 or more", "rpm")
    budget = _number(body, "budget_usd_day", 0)
    if (rpm is not None or budget is not None) and not guarded:
        raise bad("this gateway has no guard in its chain (kill_switch: false and no budgets, "
                  "rate limits or loop checks), so a key's rpm or budget_usd_day would not be "
                  "enforced", "rpm" if rpm is not None else "budget_usd_day")
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        raise bad("'label' must be a string of up to 200 characters", "label")
    return NewKey(agent=agent, expires=_expires(body, time.time()),
                  models=_globs(body, "models"), tools=_globs(body, "tools"),
                  budget_usd_day=budget, rpm=rpm, label=label or "")


async def read_rotation(request: web.Request, server: ServerConfig) -> float:
    """POST /admin/keys/{id}/rotate: the grace in seconds the old secret keeps (0: none)."""
    body = await _object(request, server, ROTATE_USAGE, empty_ok=True)
    _unknown(body, ("grace_s",), ROTATE_USAGE)
    return _number(body, "grace_s", 0, MAX_GRACE_S, low_open=False) or 0.0
