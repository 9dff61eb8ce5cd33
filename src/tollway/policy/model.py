"""Policy files and their evaluation.

Every file's rules apply together, in order. For one agent and one tool (or model) name: a
matching `deny` of any rule that applies to the agent refuses; otherwise a matching `allow`
permits; otherwise, if a rule that applies restricts that kind with an `allow` list, the name
is refused for not being on it; otherwise `default` decides. Zones mark tools by risk: `red`
needs a human's approval, `yellow` runs and is flagged, the rest is green.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.policy.guardrails import GuardrailRule

Zone = Literal["green", "yellow", "red"]
_SEVERITY = {"green": 0, "yellow": 1, "red": 2}
_MODEL_CALLS = {"off": 0, "flag": 1, "block": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Names(_Strict):
    tools: list[str] | None = None  # globs: "weather", "files/read_*", "*"
    models: list[str] | None = None


class PolicyRule(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    agents: list[str] | None = None  # globs; with neither agents nor teams: everyone
    teams: list[str] | None = None
    allow: Names = Field(default_factory=Names)
    deny: Names = Field(default_factory=Names)


class Zones(_Strict):
    red: list[str] = Field(default_factory=list)  # held for a human's approval
    yellow: list[str] = Field(default_factory=list)  # run, flagged


class Approvals(_Strict):
    timeout_s: float = Field(300, gt=0)  # unanswered this long: rejected


class PolicyFile(_Strict):
    default: Literal["allow", "deny"] = "allow"
    rules: list[PolicyRule] = Field(default_factory=list)
    zones: Zones = Field(default_factory=Zones)
    approvals: Approvals | None = None
    # A model's response that names a tool the agent may not use: block (replace the call
    # with an error the agent can read), flag (pass it, count and log it), off.
    model_tool_calls: Literal["block", "flag", "off"] | None = None
    guardrails: list[GuardrailRule] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""  # why not, for the error message; which rule allowed, for the trace


@dataclass(slots=True)
class PolicySet:
    rules: list[PolicyRule] = field(default_factory=list)
    zones: list[tuple[str, Zone]] = field(default_factory=list)  # (glob, zone), red first
    default: str = "allow"
    approval_timeout_s: float = 300.0
    model_tool_calls: str = "block"
    files: list[str] = field(default_factory=list)
    guardrails: list[GuardrailRule] = field(default_factory=list)
    _memo: dict[tuple[str, str, str, str], Decision] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> PolicySet:
        return cls()

    @classmethod
    def merge(cls, files: list[tuple[str, PolicyFile]]) -> PolicySet:
        """Several files act as one: rules in order, the most severe zone, the shortest
        approval wait, the strictest default and model_tool_calls."""
        ps = cls(files=[f for f, _ in files])
        zones: dict[str, Zone] = {}
        timeouts = []
        calls = []
        for _, pf in files:
            ps.rules += pf.rules
            ps.guardrails += pf.guardrails
            for zone, globs in (("red", pf.zones.red), ("yellow", pf.zones.yellow)):
                for g in globs:
                    if _SEVERITY[zone] > _SEVERITY[zones.get(g, "green")]:
                        zones[g] = zone  # type: ignore[assignment]
            if pf.default == "deny":
                ps.default = "deny"
            if pf.approvals is not None:
                timeouts.append(pf.approvals.timeout_s)
            if pf.model_tool_calls is not None:
                calls.append(pf.model_tool_calls)
        ps.zones = sorted(zones.items(), key=lambda kv: -_SEVERITY[kv[1]])
        if timeouts:
            ps.approval_timeout_s = min(timeouts)
        if calls:
            ps.model_tool_calls = max(calls, key=_MODEL_CALLS.__getitem__)
        return ps

    @property
    def restricts(self) -> bool:
        return bool(self.rules) or self.default == "deny"

    def tool(self, agent: str, team: str, name: str) -> Decision:
        return self._decide(agent, team, "tools", name)

    def model(self, agent: str, team: str, name: str) -> Decision:
        return self._decide(agent, team, "models", name)

    def zone(self, tool: str) -> Zone:
        for glob, zone in self.zones:
            if fnmatch.fnmatchcase(tool, glob):
                return zone
        return "green"

    def _decide(self, agent: str, team: str, kind: str, name: str) -> Decision:
        memo_key = (agent, team, kind, name)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._evaluate(agent, team, kind, name)
            if len(self._memo) > 65536:
                self._memo.clear()
            self._memo[memo_key] = found
        return found

    def _evaluate(self, agent: str, team: str, kind: str, name: str) -> Decision:
        what = kind[:-1]
        applying = [r for r in self.rules if _applies(r, agent, team)]
        for r in applying:
            globs = getattr(r.deny, kind)
            if globs and _match(name, globs):
                return Decision(False, f"policy rule {r.name!r} denies {what} {name!r} to "
                                       f"agent {agent!r}")
        restricting = []
        for r in applying:
            globs = getattr(r.allow, kind)
            if globs is None:
                continue
            if _match(name, globs):
                return Decision(True, r.name)
            restricting.append(r.name)
        if restricting:
            return Decision(False, f"{what} {name!r} is not on the allow list of policy rule "
                                   f"{restricting[0]!r} for agent {agent!r}")
        if self.default == "deny":
            return Decision(False, f"no policy rule allows {what} {name!r} to agent {agent!r} "
                                   f"(default: deny)")
        return Decision(True, "default")


def _applies(r: PolicyRule, agent: str, team: str) -> bool:
    if r.agents is None and r.teams is None:
        return True
    return bool((r.agents and _match(agent, r.agents)) or (r.teams and _match(team, r.teams)))


def _match(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)
