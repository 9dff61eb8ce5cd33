"""The benchmark's request: a coding agent's chat history of about 2,000 o200k tokens.

Gateway overhead depends on what it parses and meters, so the body has the size and shape of
a real agent step (system prompt, prose, code, JSON, a tool call and its result) rather than a
one-line "hello". The history is the same on every request, as an agent resends it each step;
only the last user turn is new (it carries a counter), so the gateway's per-message token memo
hits on the history and really tokenises the new turn.
"""

from __future__ import annotations

from typing import Any

import orjson

MODEL = "gpt-4o-mini"
MAX_TOKENS = 128
MARKER = "\u0000STEP\u0000"  # replaced by the request counter in the serialised body

SYSTEM = """\
You are Harbor, an autonomous software engineering agent working inside a developer's \
repository. You can read files, run shell commands in a sandbox, and propose patches. Follow \
these rules on every step:

1. Before changing code, read the relevant files and the tests that cover them. Never guess \
an API you have not seen in the repository or its pinned dependencies.
2. Keep patches minimal and focused on the task. Do not reformat unrelated code, rename public \
symbols, or change configuration defaults unless the task asks for it.
3. After every patch, run the narrowest test command that exercises the change, then the full \
suite if the narrow one passes. Report failures verbatim, with the command you ran.
4. When a command fails for reasons outside the task (network, missing credentials, flaky \
timing), say so plainly instead of working around it silently.
5. Explain your reasoning in short paragraphs. Use fenced code blocks for code, diffs and \
logs. Prefer concrete file paths and line numbers over vague descriptions.
6. Never print secrets. If a file or an environment variable looks like it holds a key or a \
token, refer to it by name only.

The repository is a Python 3.11 service called "ledger" that ingests payment events from a \
message queue, deduplicates them, and writes daily settlement reports. It uses asyncio, \
aiohttp for its small HTTP API, SQLAlchemy 2.0 with asyncpg for storage, and pytest with \
pytest-asyncio for tests. The team's style guide asks for type hints on public functions and \
docstrings that explain why, not what."""

USER_1 = """\
Our nightly settlement job started double-counting refunds last week. Finance noticed that \
the report for 2024-03-14 shows 1,412 refunds while the payment processor's dashboard shows \
1,398. I suspect the deduplication step, because we changed the event schema on the 12th \
(the processor added a `retry_count` field). Can you find out what is going on? The job \
lives in `ledger/settle.py` and the dedup logic in `ledger/dedup.py`."""

ASSISTANT_1 = """\
I'll start by reading the deduplication module, since a schema change that adds a field is a \
classic way to break a content-based dedup key."""

TOOL_ARGS = orjson.dumps({"path": "ledger/dedup.py", "start_line": 1, "end_line": 48}).decode()

TOOL_RESULT = '''\
"""Drop events we have already seen, keyed by their content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

from ledger.events import PaymentEvent
from ledger.store import SeenStore


def event_key(event: PaymentEvent) -> str:
    """A stable key for an event: the hash of its JSON body."""
    body = json.dumps(event.raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


async def dedup(events: AsyncIterator[PaymentEvent], seen: SeenStore,
                ) -> AsyncIterator[PaymentEvent]:
    async for event in events:
        key = event_key(event)
        if await seen.add(key):  # False when the key was already there
            yield event
'''

ASSISTANT_2 = """\
Found the likely cause. `event_key` hashes the *entire* raw event body. Since the 12th the \
processor includes `retry_count`, which increments every time it redelivers an event. A \
redelivered refund therefore has a different body, a different hash, and passes the dedup \
check as if it were new. Before the schema change, redeliveries were byte-identical and were \
dropped correctly.

The processor documents `event_id` as unique per logical event and stable across retries, so \
the key should be derived from it (plus the event type, to be safe against ID reuse across \
event families). Here is the patch I propose:

```python
def event_key(event: PaymentEvent) -> str:
    \"\"\"Key on the processor's stable event id: redeliveries differ in retry_count.\"\"\"
    return f"{event.raw['type']}:{event.raw['event_id']}"
```

This keeps the `SeenStore` interface unchanged. Existing keys in the store are SHA-256 hex \
strings, so the new keys cannot collide with them; the only cost is that events already \
ingested under the old key could be counted once more if redelivered during the rollout \
window. I will check how long keys are retained before we decide whether that matters."""

USER_2 = """\
Keys are retained for 72 hours. Here is one of the duplicated refunds from the queue's \
dead-letter log, in case it helps confirm the theory:

```json
{"event_id": "evt_1OqR7dK2m9XbT4", "type": "charge.refunded", "created": 1710403377,
 "retry_count": 2, "livemode": true,
 "data": {"object": {"id": "re_3OqR7cK2m9XbT41a0", "amount": 4599, "currency": "eur",
  "charge": "ch_3OqR5aK2m9XbT41f", "reason": "requested_by_customer", "status": "succeeded",
  "metadata": {"order_id": "A-20240314-0087", "channel": "web"}}},
 "request": {"id": "req_Yw2kLmN8pQ", "idempotency_key": "8f14e45f-ceea-467f-a0e6-0c5f3b7a"}}
```

The same `event_id` appears three times in the raw topic with `retry_count` 0, 1 and 2."""

ASSISTANT_3 = """\
That confirms it: three deliveries of `evt_1OqR7dK2m9XbT4`, identical except for \
`retry_count`, so the old content hash produced three distinct keys and the report counted \
the refund three times. With the patched `event_key`, all three map to \
`charge.refunded:evt_1OqR7dK2m9XbT4` and only the first is kept.

With a 72-hour retention window, the rollout risk is small: an event first seen under the \
old key and redelivered after the deploy would be counted twice, but only if the redelivery \
lands within those 72 hours. To close that gap entirely, `dedup` can check both keys during \
the transition:

```python
async def dedup(events, seen, *, legacy_until: float | None = None):
    async for event in events:
        key = event_key(event)
        fresh = await seen.add(key)
        if fresh and legacy_until is not None and event.raw["created"] < legacy_until:
            fresh = not await seen.contains(legacy_event_key(event))
        if fresh:
            yield event
```

Next I will add a regression test in `tests/test_dedup.py` that feeds the same event with \
`retry_count` 0, 1 and 2 and asserts that exactly one comes out, then run \
`pytest tests/test_dedup.py -q` followed by the full suite. I also recommend re-running the \
settlement job for 2024-03-12 through 2024-03-18 once the fix is deployed, since every report \
in that range may include duplicated refunds."""

USER_3 = """\
Before you patch anything: could the settlement query itself also be at fault? Here is the \
part of `ledger/settle.py` that counts refunds, and yesterday's log line from the job.

```python
stmt = (
    select(Refund.currency, func.count(), func.sum(Refund.amount))
    .where(Refund.settled_on == day)
    .group_by(Refund.currency)
)
```

```
2024-03-19T02:00:07Z INFO settle day=2024-03-18 refunds=1391 eur=1204 usd=187 took=4.2s
```"""

ASSISTANT_4 = """\
The query looks correct for what it is asked to do: it counts rows in `refunds` for one \
settlement day, grouped by currency, and it has no join that could multiply rows. So the \
extra refunds are real rows in the table, which is consistent with the dedup theory: the \
duplicates were inserted upstream of this query, not produced by it.

Two smaller observations while we are here:

- `Refund.settled_on == day` compares a `DATE` column with a Python `date`, which is fine, \
but the job derives `day` from `datetime.utcnow()`. Near midnight in Europe/Paris, that can \
settle the previous UTC day rather than the local one finance expects. It is not the cause \
of this bug, but it is worth a ticket.
- There is no unique constraint on `refunds.processor_refund_id`. Adding one would have \
turned this silent double count into a loud insert error. I suggest a migration that adds \
`UNIQUE (processor_refund_id)` after the duplicate rows are cleaned up, with \
`ON CONFLICT DO NOTHING` in the insert path so redeliveries become harmless by construction.

If you agree, I will keep the dedup patch as the fix for this incident and file the \
constraint and the timezone issue as follow-ups rather than mixing them into one change."""

LAST_USER = (
    f"Step {MARKER}: go ahead. Write the regression test, apply the patch to "
    "`ledger/dedup.py`, run the narrow test and then the full suite, and show me the diff "
    "and both test outputs. Keep the transition check behind a `LEDGER_LEGACY_KEYS_UNTIL` "
    "setting so ops can switch it off after 72 hours."
)


def messages() -> list[dict[str, Any]]:
    """The chat, with MARKER where the per-request counter goes."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER_1},
        {
            "role": "assistant",
            "content": ASSISTANT_1,
            "tool_calls": [
                {
                    "id": "call_read_dedup_01",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": TOOL_ARGS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_read_dedup_01", "content": TOOL_RESULT},
        {"role": "assistant", "content": ASSISTANT_2},
        {"role": "user", "content": USER_2},
        {"role": "assistant", "content": ASSISTANT_3},
        {"role": "user", "content": USER_3},
        {"role": "assistant", "content": ASSISTANT_4},
        {"role": "user", "content": LAST_USER},
    ]


def body_template(stream: bool) -> tuple[bytes, bytes]:
    """(prefix, suffix): ``prefix + str(n).encode() + suffix`` is the JSON body of request n.

    Serialising once and splicing the counter in keeps the load generator's cost per request
    to one bytes concatenation.
    """
    body: dict[str, Any] = {"model": MODEL, "messages": messages(), "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
    raw = orjson.dumps(body)
    marker = orjson.dumps(MARKER)[1:-1]
    prefix, sep, suffix = raw.partition(marker)
    assert sep and marker not in suffix, "the marker must occur exactly once"
    return prefix, suffix


def prompt_tokens() -> int:
    """o200k tokens of the prompt, counted like OpenAI's chat format (3 per message + 3)."""
    from tollway.tokens.encodings import get_encoding

    enc = get_encoding("o200k_base")
    total = 3
    for m in messages():
        text = m["content"].replace(MARKER, "1000")
        for call in m.get("tool_calls", ()):
            text += call["function"]["name"] + call["function"]["arguments"]
        total += 3 + len(enc.encode_ordinary(text))
    return total
