"""Guardrail rules in the policy files: which detectors look where, for whom, and what is
done with what they find.

    guardrails:
      - name: no-card-numbers
        on: [prompt, tool_args]          # prompt, answer, tool_args, tool_results
        detectors: [pii]                 # pii, secrets, injection, custom
        entities: [CREDIT_CARD, IBAN_CODE]   # optional: only these kinds
        action: redact                   # redact, block, flag, hold
        agents: ["support-*"]            # optional, like the access rules (teams too)
        tools: ["crm/*"]                 # optional: only calls to these tools
        models: ["gpt-*"]                # optional: only requests for these models

Every rule that applies to a place is run; what one finding triggers is the most severe
action of the rules that found it (block > hold > redact > flag). `redact` replaces the
value with a placeholder (`<EMAIL_ADDRESS_1>`, the same value the same placeholder within a
request) or, with `redact_with: mask`, with asterisks; `restore: true` puts the original
values back into the answer of a request whose prompt was redacted (the model never sees
them, the agent gets them back).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.config.guardrails import Action, Detector, Where

SEVERITY = {"flag": 0, "redact": 1, "hold": 2, "block": 3}


class GuardrailRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    on: list[Where] = Field(min_length=1)
    detectors: list[Detector] = Field(min_length=1)
    entities: list[str] | None = None
    action: Action = "flag"
    redact_with: Literal["placeholder", "mask"] = "placeholder"
    restore: bool = False
    agents: list[str] | None = None
    teams: list[str] | None = None
    tools: list[str] | None = None
    models: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Applicable:
    """The rules that apply to one place of one request, and the detectors they need."""

    rules: tuple[GuardrailRule, ...]
    detectors: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.rules)


NONE = Applicable((), frozenset())


class GuardrailRules:
    def __init__(self, rules: list[GuardrailRule]) -> None:
        self.rules = rules
        self._memo: dict[tuple[str, str, str, str], Applicable] = {}

    @property
    def detectors(self) -> set[str]:
        return {d for r in self.rules for d in r.detectors}

    def places(self) -> set[str]:
        return {w for r in self.rules for w in r.on}

    def applicable(self, where: str, agent: str, team: str, name: str) -> Applicable:
        """`name`: the model for prompt and answer, the tool for tool_args and tool_results."""
        key = (where, agent, team, name)
        found = self._memo.get(key)
        if found is None:
            kind = "models" if where in ("prompt", "answer") else "tools"
            rules = tuple(r for r in self.rules if where in r.on and _whom(r, agent, team)
                          and _match(name, getattr(r, kind)))
            found = Applicable(rules, frozenset(d for r in rules for d in r.detectors)) \
                if rules else NONE
            if len(self._memo) > 65536:
                self._memo.clear()
            self._memo[key] = found
        return found


def _whom(r: GuardrailRule, agent: str, team: str) -> bool:
    if r.agents is None and r.teams is None:
        return True
    return bool((r.agents and _match(agent, r.agents)) or (r.teams and _match(team, r.teams)))


def _match(name: str, globs: list[str] | None) -> bool:
    return globs is None or any(fnmatch.fnmatchcase(name, g) for g in globs)
