"""Guardrails: run the detectors the applicable rules need over a request's or an answer's
texts, and say what the rules make of each finding.

Detectors are built once, when the config loads (a missing package or an unknown entity is
a config error, not a 500 later), and only those some rule uses. A conversation is sent
again whole at every step, so what a detector found in a text is remembered by the text
(a bounded memo): a long history is scanned once, not once per step.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tollway.config.guardrails import GuardrailsConfig
from tollway.observe.metrics import Metrics
from tollway.policy.guardrails import NONE, SEVERITY, Applicable, GuardrailRule, GuardrailRules

from .base import Detector, Finding
from .judge import InjectionJudge
from .slots import Slot

PLACES = {"prompt": "the prompt", "answer": "the answer", "tool_args": "the arguments",
          "tool_results": "a tool result"}
RECENT = 500  # events the console lists
_MEMO_CHARS = 16_000_000  # per generation: what a detector found, by text


def build_detectors(cfg: GuardrailsConfig, names: set[str]) -> dict[str, Detector]:
    out: dict[str, Detector] = {}
    for name in sorted(names):
        if name == "pii":
            from .pii import PiiDetector

            out[name] = PiiDetector(cfg.pii)
        elif name == "secrets":
            from .secrets import SecretsDetector

            out[name] = SecretsDetector(cfg.secrets)
        elif name == "injection":
            from .injection import InjectionDetector

            out[name] = InjectionDetector(cfg.injection)
        elif name == "custom":
            from .custom import CustomDetector

            out[name] = CustomDetector(cfg.custom)
    return out


@dataclass(frozen=True, slots=True)
class Hit:
    slot: int  # index into the slots checked
    finding: Finding
    rule: GuardrailRule
    kind: str = "prompt"  # the slot's: prompt, tool_results, answer, tool_args


@dataclass(slots=True)
class Verdict:
    hits: list[Hit] = field(default_factory=list)
    unscanned: bool = False  # a text past max_chars was not looked at

    @property
    def action(self) -> str | None:
        if not self.hits:
            return None
        return max((h.rule.action for h in self.hits), key=SEVERITY.__getitem__)

    def rules(self, action: str) -> list[GuardrailRule]:
        seen: dict[str, GuardrailRule] = {}
        for h in self.hits:
            if h.rule.action == action:
                seen.setdefault(h.rule.name, h.rule)
        return list(seen.values())

    def summary(self, action: str | None = None) -> str:
        """"rule (ENTITY in the prompt)" for the error message, the approver and the
        header; never the values."""
        parts: dict[str, None] = {}
        for h in self.hits:
            if action is None or h.rule.action == action:
                parts[f"{h.rule.name} ({h.finding.entity} in {PLACES.get(h.kind, h.kind)})"] \
                    = None
        return ", ".join(parts)


class Guardrails:
    def __init__(self, cfg: GuardrailsConfig, rules: Sequence[GuardrailRule],
                 metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.rules = GuardrailRules(list(rules))
        for r in rules:
            if "pii" in r.detectors and r.detectors == ["pii"] and r.entities:
                off = [e for e in r.entities if e not in cfg.pii.entities]
                if off:
                    raise ValueError(f"rule {r.name!r} acts on {', '.join(off)}, which "
                                     "guardrails.pii.entities does not look for")
        self.detectors = build_detectors(cfg, self.rules.detectors)
        self.metrics = metrics
        self.judge: InjectionJudge | None = None  # set by the gateway when configured
        # what the guardrails found lately in this process, for the console (no values)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._new: dict[tuple[str, str], tuple[Finding, ...]] = {}
        self._old: dict[tuple[str, str], tuple[Finding, ...]] = {}
        self._chars = 0

    def __bool__(self) -> bool:
        return bool(self.rules.rules)

    def applicable(self, where: str, agent: str, team: str, name: str) -> Applicable:
        if not self.rules.rules:
            return NONE
        return self.rules.applicable(where, agent, team, name)

    def check(self, slots: Sequence[Slot], by_kind: Mapping[str, Applicable]) -> Verdict:
        """Every finding in `slots` that an applicable rule of the slot's kind acts on."""
        verdict = Verdict()
        needed = {d for a in by_kind.values() for d in a.detectors}
        for det_name in sorted(needed):
            detector = self.detectors[det_name]
            started = time.perf_counter()
            acted: str | None = None
            for i, slot in enumerate(slots):
                app = by_kind.get(slot.kind)
                if not app or det_name not in app.detectors:
                    continue
                text = slot.text
                if len(text) > self.cfg.max_chars:
                    verdict.unscanned = True
                    continue
                for f in self._scan(detector, det_name, text):
                    rule = _acting(app.rules, det_name, f)
                    if rule is not None:
                        verdict.hits.append(Hit(i, f, rule, slot.kind))
                        if acted is None or SEVERITY[rule.action] > SEVERITY[acted]:
                            acted = rule.action
            if self.metrics is not None:
                m = self.metrics
                m.child(m.guardrail_seconds, det_name).observe(time.perf_counter() - started)
                m.child(m.guardrail_checks, det_name, acted or "pass").inc()
        return verdict

    async def check_judged(self, slots: Sequence[Slot], by_kind: Mapping[str, Applicable],
                           ) -> Verdict:
        """check(), then the injection judge on the texts injection rules apply to that the
        heuristics found nothing in."""
        verdict = self.check(slots, by_kind)
        if self.judge is None:
            return verdict
        flagged = {h.slot for h in verdict.hits if h.finding.detector == "injection"}
        asked = [i for i, s in enumerate(slots) if i not in flagged
                 and (app := by_kind.get(s.kind)) and "injection" in app.detectors
                 and len(s.text) <= self.cfg.max_chars]
        if not asked:
            return verdict
        for i, f in zip(asked, await self.judge.findings([slots[i].text for i in asked]),
                        strict=True):
            if f is not None:
                rule = _acting(by_kind[slots[i].kind].rules, "injection", f)
                if rule is not None:
                    verdict.hits.append(Hit(i, f, rule, slots[i].kind))
        return verdict

    def _scan(self, detector: Detector, name: str, text: str) -> tuple[Finding, ...]:
        key = (name, text)
        found = self._new.get(key)
        if found is None:
            found = self._old.get(key)
            if found is None:
                found = tuple(detector.scan(text))
            self._chars += len(text)
            if self._chars > _MEMO_CHARS:
                self._old, self._new, self._chars = self._new, {}, len(text)
            self._new[key] = found
        return found


def _acting(rules: Sequence[GuardrailRule], detector: str, f: Finding,
            ) -> GuardrailRule | None:
    best: GuardrailRule | None = None
    for r in rules:
        if detector in r.detectors and (r.entities is None or f.entity in r.entities) \
                and (best is None or SEVERITY[r.action] > SEVERITY[best.action]):
            best = r
    return best
