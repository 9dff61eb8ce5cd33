"""Guardrail detectors on public labelled data: precision, recall and CPU cost.

    .venv/bin/python bench/guardrails_eval.py [--half tune|test|both] [--detectors a,b]

Why: the detectors' patterns were written from write-ups and a few examples; this measures
them on corpora nobody here wrote (bench/data/guardrails/, provenance in SOURCES.md),
so a change to a pattern shows what it buys and what it costs.

Each corpus line is ``{"text", "label": 0|1, "source", ...}`` (PII lines also carry
``entity`` and ``spans`` [start, end, entity]). Every corpus is split in two by a hash of
the text (blake2b; even first byte: tune, odd: test). The developers tune on the tune half
only and read its misses in bench/results/guardrails-eval-tune-errors.md; the headline
numbers are the test half's, whose errors are never printed.

An item is flagged when the detector returns any finding (for PII, any finding of an
entity type the corpus labels: the others cannot be judged). PII is also scored per entity
and per span (a found span counts when it overlaps a labelled span of the same type).
CPU cost is time.process_time over scanning the whole corpus once, per KB of UTF-8 text.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tollway.config.guardrails import InjectionConfig, PiiConfig, SecretsConfig
from tollway.guardrails.base import Finding
from tollway.guardrails.injection import InjectionDetector
from tollway.guardrails.pii import PiiDetector
from tollway.guardrails.secrets import SecretsDetector

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data" / "guardrails"
RESULTS = BENCH / "results"
HALVES = ("tune", "test")
EXCERPT = 700  # characters of an item shown in the tune-errors file
MIN_CPU, MAX_PASSES = 1.0, 20  # timing: whole-corpus passes until this much CPU


CAVEATS = [
    "- *Injection*: each positive is a public attack string put into a public benign text "
    "by its benchmark's own rule (AgentDojo's attacks in its tools' results, BIPIA's "
    "insert at start/end of an email, spikee's payload after its email). A template "
    "recurs in both halves (the split is by text), so a pattern written for a template "
    "seen in *tune* also lifts *test*: read recall per attack, not only the total. "
    "BIPIA's attacks change the task without any override wording (\"Translate your "
    "response into Spanish.\"); a lexical detector cannot see most of them.",
    "- *Injection*: negatives (benign tool results, emails, user prompts) are fewer than "
    "positives, so precision is flattering next to real traffic, where injections are "
    "rare: the FP rate is the number to watch.",
    "- *PII*: synthetic template sentences (presidio-research); templates recur in both "
    "halves; only the pattern entities are scored (CRYPTO has no label in it).",
    "- *Secrets*: the test strings gitleaks and detect-secrets keep for their own rules "
    "(well-formed fake credentials and curated false positives); a small set, hence the "
    "wide intervals. Labels say \"a scanner should / should not report this\".",
]


@dataclass
class Item:
    text: str
    label: int
    source: str
    half: str
    meta: dict[str, Any]
    entities: set[str] = field(default_factory=set)  # labelled entity types (PII)
    spans: list[tuple[int, int, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.findings)


@dataclass
class Run:
    name: str  # the row in the report: detector and configuration
    corpus: str
    build: Callable[[], Any]
    judged: Callable[[Item, Finding], bool] = lambda item, f: True


def half(text: str) -> str:
    return HALVES[hashlib.blake2b(text.encode(), digest_size=8).digest()[0] % 2]


def load(path: Path) -> list[Item]:
    items = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = orjson.loads(line)
        meta = {k: v for k, v in r.items()
                if k not in ("text", "label", "source", "entity", "spans")}
        entity = r.get("entity") or []
        items.append(Item(r["text"], int(r["label"]), r["source"], half(r["text"]), meta,
                          set([entity] if isinstance(entity, str) else entity),
                          [(int(s), int(e), t) for s, e, t in r.get("spans", [])]))
    return items


def pii_types(items: Iterable[Item]) -> set[str]:
    return {t for i in items for _, _, t in i.spans}


def runs(data: Path) -> dict[str, list[Run]]:
    pii_path = data / "pii.jsonl"
    labelled = pii_types(load(pii_path)) if pii_path.exists() else set()
    return {
        "injection": [Run("injection", "injection.jsonl",
                          lambda: InjectionDetector(InjectionConfig()))],
        "pii": [Run("pii", "pii.jsonl", lambda: PiiDetector(PiiConfig()),
                    lambda item, f: f.entity in labelled)],
        "secrets": [Run("secrets", "secrets.jsonl", lambda: SecretsDetector(SecretsConfig())),
                    Run("secrets (entropy: true)", "secrets.jsonl",
                        lambda: SecretsDetector(SecretsConfig(entropy=True)))],
    }


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, label: int, flagged: bool) -> None:
        if label and flagged:
            self.tp += 1
        elif label:
            self.fn += 1
        elif flagged:
            self.fp += 1
        else:
            self.tn += 1

    @property
    def items(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None

    @property
    def fpr(self) -> float | None:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def wilson(k: int, n: int, z: float = 1.96) -> str:
    """k of n with its 95% Wilson interval: how much a small half can be trusted."""
    if not n:
        return "n/a"
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{p:.3f} ({max(0.0, mid - half):.2f}-{min(1.0, mid + half):.2f})"


def scan(run: Run, items: list[Item]) -> tuple[float, float]:
    """Scans the whole corpus, again and again until MIN_CPU seconds of CPU were spent
    (a small corpus takes a few milliseconds: too little to time); the findings are the
    first pass's. Returns (CPU seconds, KB scanned), summed over the passes."""
    detector = run.build()
    detector.scan("warm-up: a first call loads what the detector loads lazily.")
    kb = sum(len(i.text.encode()) for i in items) / 1024
    found: list[list[Finding]] = []
    cpu = scanned = 0.0
    for n in range(MAX_PASSES):
        t0 = time.process_time()
        result = [detector.scan(i.text) for i in items]
        cpu += time.process_time() - t0
        scanned += kb
        if n == 0:
            found = result
        if cpu >= MIN_CPU:
            break
    for item, fs in zip(items, found, strict=True):
        item.findings = [f for f in fs if run.judged(item, f)]
    return cpu, scanned


def score(items: Iterable[Item], key: Callable[[Item], str] | None = None,
          ) -> dict[str, Score]:
    out: dict[str, Score] = defaultdict(Score)
    for i in items:
        out["all"].add(i.label, i.flagged)
        if key is not None:
            out[key(i)].add(i.label, i.flagged)
    return out


def entity_scores(items: list[Item]) -> dict[str, Score]:
    """Item level, one entity type at a time: labelled with it vs found it."""
    out: dict[str, Score] = {}
    for t in sorted(pii_types(items)):
        s = Score()
        for i in items:
            s.add(int(any(st == t for _, _, st in i.spans)),
                  any(f.entity == t for f in i.findings))
        out[t] = s
    return out


def span_scores(items: list[Item]) -> dict[str, Score]:
    """Span level: a labelled span is found when a finding of its type overlaps it; a
    finding is right when it overlaps a labelled span of its type (tn unused)."""
    out: dict[str, Score] = defaultdict(Score)
    for i in items:
        for s, e, t in i.spans:
            hit = any(f.entity == t and f.start < e and s < f.end for f in i.findings)
            for k in ("all", t):
                if hit:
                    out[k].tp += 1
                else:
                    out[k].fn += 1
        for f in i.findings:
            if not any(f.entity == t and f.start < e and s < f.end for s, e, t in i.spans):
                out["all"].fp += 1
                out[f.entity].fp += 1
    return out


def table(rows: list[tuple[str, Score]], first: str, fpr: bool = True) -> list[str]:
    head = f"| {first} | items | pos | TP | FP | FN | precision | recall | F1 |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if fpr:
        head += " FP rate |"
        rule += "---:|"
    out = [head, rule]
    for name, s in rows:
        line = (f"| {name} | {s.items} | {s.tp + s.fn} | {s.tp} | {s.fp} | {s.fn} | "
                f"{fmt(s.precision)} | {fmt(s.recall)} | {fmt(s.f1)} |")
        out.append(line + (f" {fmt(s.fpr)} |" if fpr else ""))
    return out


def span_table(rows: list[tuple[str, Score]]) -> list[str]:
    out = ["| entity | labelled spans | found | wrong findings | missed | precision | "
           "recall | F1 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        out.append(f"| {name} | {s.tp + s.fn} | {s.tp} | {s.fp} | {s.fn} | "
                   f"{fmt(s.precision)} | {fmt(s.recall)} | {fmt(s.f1)} |")
    return out


def report(results: list[tuple[Run, list[Item], float, float]], halves: list[str],
           command: str, missing: list[str]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Guardrail detectors on public labelled data", "",
        f"`{command}` — {now}, Python {platform.python_version()}, "
        f"{platform.machine()}.", "",
        "- **Data**: bench/data/guardrails/*.jsonl; where each corpus comes from, how it "
        "was assembled and its licence: bench/data/guardrails/SOURCES.md.",
        "- **Split**: by a hash of the text (blake2b, first byte even: *tune*, odd: "
        "*test*). Tune on *tune* only; the headline is *test*; only tune-half misses are "
        "listed (bench/results/guardrails-eval-tune-errors.md).",
        "- **Item level**: an item is flagged when the detector returns any finding (PII: "
        "of an entity type the corpus labels). FP rate = FP / negatives.",
        "- **CPU**: time.process_time over scans of the whole corpus (both halves; "
        "repeated until 1 s of CPU), µs per KB of UTF-8 text, default configuration, "
        "one process.", "",
    ]
    if missing:
        out += [f"Not evaluated (no corpus): {', '.join(missing)}.", ""]
    out += ["Reading it:", "", *CAVEATS, ""]
    out += ["## Headline", "",
            "Item level; in brackets the 95% Wilson interval (the halves are small).", "",
            "| detector | half | items (pos) | precision | recall | F1 | FP rate | "
            "CPU µs/KB |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for run, items, cpu, kb in results:
        for h in halves:
            s = score(i for i in items if i.half == h)["all"]
            out.append(f"| {run.name} | {h} | {s.items} ({s.tp + s.fn}) | "
                       f"{wilson(s.tp, s.tp + s.fp)} | {wilson(s.tp, s.tp + s.fn)} | "
                       f"{fmt(s.f1)} | {wilson(s.fp, s.fp + s.tn)} | {cpu / kb * 1e6:,.0f} |")
    out.append("")
    for run, items, cpu, kb in results:
        size = sum(len(i.text.encode()) for i in items) / 1024
        passes = round(kb / size)
        out += [f"## {run.name}", "",
                f"{len(items)} items, {size:,.0f} KB; {cpu:.2f} s CPU for {passes} "
                f"pass{'es' if passes > 1 else ''} ({cpu / kb * 1e6:,.0f} µs/KB, "
                f"{cpu / passes / len(items) * 1e6:,.0f} µs/item).", ""]
        for h in halves:
            part = [i for i in items if i.half == h]
            by_source = score(part, lambda i: i.source)
            out += [f"### {h} half", "", *table(
                [(k, v) for k, v in sorted(by_source.items()) if k != "all"]
                + [("**all**", by_source["all"])], "source"), ""]
            if run.corpus == "pii.jsonl":
                out += ["Per entity (item level):", "",
                        *table(list(entity_scores(part).items()), "entity"), "",
                        "Per span (overlap with a labelled span of the same type):", "",
                        *span_table(sorted(span_scores(part).items(),
                                           key=lambda kv: (kv[0] != "all", kv[0]))), ""]
            attacks = score((i for i in part if i.label), _kind)
            if run.corpus == "injection.jsonl" and len(attacks) > 2:
                out += ["Recall by attack (positives only):", "", "| attack | positives | "
                        "caught | recall |", "|---|---:|---:|---:|"]
                for k, v in sorted(attacks.items()):
                    if k != "all":
                        out.append(f"| {k} | {v.tp + v.fn} | {v.tp} | {fmt(v.recall)} |")
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def _kind(i: Item) -> str:
    """The group an item is listed in: its source, and its attack or labelled entities."""
    what = i.meta.get("attack") or ",".join(sorted(i.entities))
    return f"{i.source}: {what}" if what else i.source


def _excerpt(text: str, around: tuple[int, int] | list[int] | None = None) -> str:
    if around is not None and len(text) > EXCERPT:
        mid = (around[0] + around[1]) // 2
        lo = max(0, min(mid - EXCERPT // 2, len(text) - EXCERPT))
        text = ("…" if lo else "") + text[lo:lo + EXCERPT] + ("…" if lo + EXCERPT < len(text)
                                                              else "")
    elif len(text) > EXCERPT:
        text = text[:EXCERPT] + f"… (+{len(text) - EXCERPT} chars)"
    return text.replace("~~~", "~ ~ ~")


def tune_errors(results: list[tuple[Run, list[Item], float, float]], command: str) -> str:
    out = ["# Guardrail evaluation: tune-half errors", "",
           f"From `{command}`. The tune half only: tune the detectors on these; the test "
           "half's errors are never listed. Long texts are cut to "
           f"{EXCERPT} characters (around the inserted attack for false negatives, around "
           "the first finding for false positives).", ""]
    for run, items, _, _ in results:
        tune = [i for i in items if i.half == "tune"]
        fns = [i for i in tune if i.label and not i.flagged]
        fps = [i for i in tune if not i.label and i.flagged]
        out += [f"## {run.name}: {len(fns)} false negatives, {len(fps)} false positives",
                ""]
        for title, group in (("False negatives", fns), ("False positives", fps)):
            if not group:
                continue
            out += [f"### {title}", ""]
            kinds: dict[str, int] = defaultdict(int)
            for i in group:
                kinds[_kind(i)] += 1
            out += [", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())), ""]
            n = 0
            for i in sorted(group, key=lambda i: (_kind(i), i.text)):
                n += 1
                meta = ", ".join(f"{k}={v}" for k, v in i.meta.items())
                if i.entities:
                    meta += (", " if meta else "") + "labelled=" + ",".join(sorted(i.entities))
                found = ", ".join(sorted({f"{f.entity}@{f.start}" for f in i.findings}))
                # around the first finding (false positives) or the inserted attack
                around = min(((f.start, f.end) for f in i.findings),
                             default=i.meta.get("inserted"))
                out += [f"{n}. **{i.source}** {meta}" + (f" — found: {found}" if found else ""),
                        "", "~~~text", _excerpt(i.text, around), "~~~", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--half", choices=["tune", "test", "both"], default="both",
                    help="which half the report shows (default both; the headline is test)")
    ap.add_argument("--detectors", default="injection,pii,secrets",
                    help="comma-separated subset of injection,pii,secrets")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the corpora")
    ap.add_argument("--out", type=Path, default=RESULTS / "guardrails-eval.md")
    ap.add_argument("--errors-out", type=Path,
                    default=RESULTS / "guardrails-eval-tune-errors.md")
    args = ap.parse_args(argv)
    command = "bench/guardrails_eval.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    command = ".venv/bin/python " + command
    by_detector = runs(args.data)
    wanted = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in by_detector]
    if unknown:
        ap.error(f"unknown detectors: {', '.join(unknown)}")
    results, missing = [], []
    for d in wanted:
        for run in by_detector[d]:
            path = args.data / run.corpus
            if not path.exists():
                missing.append(f"{run.name} ({run.corpus})")
                continue
            items = load(path)
            cpu, kb = scan(run, items)
            results.append((run, items, cpu, kb))
    halves = list(HALVES) if args.half == "both" else [args.half]
    text = report(results, halves, command, missing)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.errors_out.write_text(tune_errors(results, command))
    print(text)
    print(f"written: {args.out.name}, {args.errors_out.name} (tune-half errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
