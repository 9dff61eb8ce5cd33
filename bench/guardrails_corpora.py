"""How the labelled corpora under bench/data/guardrails/ were built from public sources.

bench/guardrails_eval.py reads the committed jsonl files; this script is the record of how
the injection and PII files were made, so that anyone can rebuild and check them (the secrets
file was copied case by case from public test suites: see bench/data/guardrails/SOURCES.md).
Nothing here writes a text of its own: every item is a public text, or a public benign text
with a public attack string put into it by the rule its benchmark publishes.

    pip install agentdojo==0.1.35            # in a virtualenv of its own
    pip download --no-deps --no-binary :all: presidio-evaluator==0.3.2 spikee==0.9.2
    # unpack both sdists; BIPIA's two files are benchmark/email/test.jsonl (saved as
    # email_test.jsonl) and benchmark/text_attack_test.json of github.com/microsoft/BIPIA
    python bench/guardrails_corpora.py --bipia DIR \
        --spikee-seeds spikee-0.9.2/spikee/data/workspace/datasets/seeds-cybersec-2026-01 \
        --spikee-fp-seeds spikee-0.9.2/spikee/data/workspace/datasets/seeds-investment-advice-fp \
        --presidio-synth presidio_evaluator-0.3.2/data/synth_dataset_v2.json

Needs agentdojo only for the injection corpus (not a dependency of tollway).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "data" / "guardrails"
AGENTDOJO_VERSION = "v1.2.2"  # the benchmark version inside agentdojo 0.1.35
# AgentDojo's fixed-template attacks (agentdojo/attacks/*.py); tool_knowledge also spells
# out the tool calls of the injection task.
AGENTDOJO_ATTACKS = ["important_instructions", "important_instructions_no_names",
                     "ignore_previous", "injecagent", "direct", "system_message",
                     "tool_knowledge"]
ATTACKS_PER_TASK = 2  # of the seven, for each user task
MIN_CHARS = 16  # tool results shorter than this ("None", "2") are not documents
BIPIA_ATTACKS_PER_SLOT = 4  # attacks put into each (email, position): 88 slots x 4
PII_ENTITIES = {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
                "IP_ADDRESS", "CRYPTO"}


def agentdojo_items() -> list[dict[str, Any]]:
    """Tool results an agent sees while solving AgentDojo's user tasks (its ground-truth
    tool calls, run on its environments): with the default (benign) values of the
    injection vectors they are negatives; with an attack's text in the vectors, the
    results that carry it are positives. The user tasks' prompts are negatives too."""
    from agentdojo.agent_pipeline.base_pipeline_element import BasePipelineElement
    from agentdojo.agent_pipeline.ground_truth_pipeline import GroundTruthPipeline
    from agentdojo.attacks.attack_registry import load_attack
    from agentdojo.functions_runtime import FunctionsRuntime
    from agentdojo.task_suite.load_suites import get_suites
    from agentdojo.types import get_text_content_as_str

    class Target(BasePipelineElement):  # only its name is read: the attacks' model name
        name = "gpt-4o-2024-05-13"

        def query(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("never called: the attacks only read the model's name")

    def results(suite: Any, task: Any, injections: dict[str, str]) -> list[str]:
        env = suite.load_and_inject_default_environment(injections)
        _, _, _, messages, _ = GroundTruthPipeline(task).query(
            task.PROMPT, FunctionsRuntime(suite.tools), env)
        return [get_text_content_as_str(m["content"]) for m in messages
                if m["role"] == "tool" and m["content"]]

    _freeze_agentdojo_clock()
    items: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(text: str, label: int, source: str, **meta: Any) -> None:
        if len(text) >= MIN_CHARS and text not in seen:
            seen.add(text)
            items.append({"text": text, "label": label, "source": source, **meta})

    for suite_name, suite in sorted(get_suites(AGENTDOJO_VERSION).items()):
        goals = sorted(suite.injection_tasks.items())
        attacks = [load_attack(a, suite, Target()) for a in AGENTDOJO_ATTACKS]
        for i, (task_id, task) in enumerate(sorted(suite.user_tasks.items())):
            add(task.PROMPT, 0, "agentdojo-user-prompt", suite=suite_name, task=task_id)
            benign = results(suite, task, {})
            for text in benign:
                add(text, 0, "agentdojo-tool-result", suite=suite_name, task=task_id)
            for j in range(ATTACKS_PER_TASK):  # attacks and goals in turn
                attack = attacks[(i * ATTACKS_PER_TASK + j) % len(attacks)]
                goal_id, goal = goals[(i * ATTACKS_PER_TASK + j) % len(goals)]
                # the results that changed are the ones carrying the attack (a result
                # shows the injected string YAML-quoted, so it is not searched for)
                attacked = results(suite, task, attack.attack(task, goal))
                for before, text in zip(benign, attacked, strict=True):
                    if text != before:
                        add(text, 1, "agentdojo-tool-result", suite=suite_name, task=task_id,
                            attack=attack.name, goal=goal_id, inserted=changed(before, text))
    return items


def _freeze_agentdojo_clock() -> None:
    """AgentDojo's email and drive tools stamp what they create with datetime.now(): a
    fixed time (inside its scenario's May 2024) keeps the corpus the same from one build
    to the next, and an attacked result differs from its benign twin only by the attack."""
    import datetime
    import types

    from agentdojo.default_suites.v1.tools import cloud_drive_client, email_client

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime.datetime:  # type: ignore[override]
            return datetime.datetime(2024, 5, 15, 12, 0, 0)

    shim = types.SimpleNamespace(**{k: getattr(datetime, k) for k in dir(datetime)
                                    if not k.startswith("__")})
    shim.datetime = Frozen
    for module in (cloud_drive_client, email_client):
        module.datetime = shim  # type: ignore[attr-defined]


def changed(before: str, after: str) -> list[int]:
    """Where `after` differs from `before`: [start, end) in `after` (the inserted text,
    give or take the quoting around it)."""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while (end < min(len(before), len(after)) - start
           and before[-1 - end] == after[-1 - end]):
        end += 1
    return [start, len(after) - end]


def bipia_items(folder: Path) -> list[dict[str, Any]]:
    """BIPIA's EmailQA test contexts (negatives) and the same emails with one of BIPIA's
    text attacks put at the start or the end, joined by a newline as BIPIA's
    insert_start / insert_end do (positives). Each (email, position) gets 4 attacks in
    turn, so that every attack is used about as often."""
    contexts: list[str] = []
    for line in (folder / "email_test.jsonl").read_text().splitlines():
        context = json.loads(line)["context"]
        if context not in contexts:
            contexts.append(context)
    by_kind = json.loads((folder / "text_attack_test.json").read_text())
    attacks = [(kind, a) for kind, texts in by_kind.items() for a in texts]
    items: list[dict[str, Any]] = [
        {"text": c, "label": 0, "source": "bipia-email"} for c in contexts]
    slot = 0
    for c in contexts:
        for position in ("start", "end"):
            for k in range(BIPIA_ATTACKS_PER_SLOT):
                kind, attack = attacks[(slot * BIPIA_ATTACKS_PER_SLOT + k) % len(attacks)]
                text = "\n".join([attack, c] if position == "start" else [c, attack])
                at = 0 if position == "start" else len(c) + 1
                items.append({"text": text, "label": 1, "source": "bipia-email",
                              "attack": kind, "position": position,
                              "inserted": [at, at + len(attack)]})
            slot += 1
    return items


def spikee_items(seeds: Path) -> list[dict[str, Any]]:
    """Spikee's seeds-cybersec-2026-01 as `spikee generate --languages en` builds it for its
    email document: every English jailbreak with every English instruction
    (<INSTRUCTION> replaced), put at the end with the default delimiter
    "\\nINJECTION_PAYLOAD\\n". The bare email is the negative."""
    def rows(name: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (seeds / name).read_text().splitlines() if x.strip()]

    docs = [d for d in rows("base_user_inputs.jsonl") if not d.get("placeholder")]
    jailbreaks = [j for j in rows("jailbreaks.jsonl") if j.get("lang", "en") == "en"]
    instructions = [i for i in rows("instructions.jsonl") if i.get("lang", "en") == "en"]
    items: list[dict[str, Any]] = []
    for doc in docs:
        items.append({"text": doc["document"], "label": 0, "source": "spikee"})
        for jb in jailbreaks:
            for ins in instructions:
                payload = jb["text"].replace("<INSTRUCTION>", ins["instruction"])
                at = len(doc["document"]) + 1
                items.append({"text": doc["document"] + "\n" + payload + "\n", "label": 1,
                              "source": "spikee", "attack": jb["jailbreak_type"],
                              "instruction": ins["instruction_type"],
                              "inserted": [at, at + len(payload)]})
    return items


def spikee_fp_items(seeds: Path) -> list[dict[str, Any]]:
    """Spikee's seeds-investment-advice-fp: benign user questions it ships to measure
    false positives (negatives)."""
    rows = [json.loads(x) for x in (seeds / "standalone_user_inputs.jsonl").read_text()
            .splitlines() if x.strip()]
    return [{"text": r["text"], "label": 0, "source": "spikee-fp"} for r in rows]


def presidio_items(path: Path) -> list[dict[str, Any]]:
    """presidio-research's synthetic sentences with their labelled spans; an item is
    positive when it has a span of an entity that tollway's pattern recognizers cover."""
    items = []
    for row in json.loads(path.read_text()):
        spans = sorted([s["start_position"], s["end_position"], s["entity_type"]]
                       for s in row["spans"] if s["entity_type"] in PII_ENTITIES)
        items.append({"text": row["full_text"], "label": int(bool(spans)),
                      "entity": sorted({s[2] for s in spans}), "spans": spans,
                      "source": "presidio-research-synth-v2",
                      "template": row["template_id"]})
    return items


def write(name: str, items: list[dict[str, Any]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / name).open("w") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    pos = sum(i["label"] for i in items)
    print(f"{name}: {len(items)} items, {pos} positive")


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # AgentDojo keeps some lists (an event's participants) in sets: a fixed hash seed
        # makes their order, and so the corpus, the same on every build
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "PYTHONHASHSEED": "0"})
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bipia", type=Path, required=True,
                    help="folder with BIPIA's email_test.jsonl and text_attack_test.json")
    ap.add_argument("--spikee-seeds", type=Path, required=True,
                    help="spikee's datasets/seeds-cybersec-2026-01 folder")
    ap.add_argument("--spikee-fp-seeds", type=Path, required=True,
                    help="spikee's datasets/seeds-investment-advice-fp folder")
    ap.add_argument("--presidio-synth", type=Path, required=True,
                    help="presidio-evaluator's data/synth_dataset_v2.json")
    args = ap.parse_args()
    write("injection.jsonl", agentdojo_items() + bipia_items(args.bipia)
          + spikee_items(args.spikee_seeds) + spikee_fp_items(args.spikee_fp_seeds))
    write("pii.jsonl", presidio_items(args.presidio_synth))


if __name__ == "__main__":
    main()
