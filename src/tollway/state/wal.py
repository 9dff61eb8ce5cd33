"""Write-ahead of each step, so a worker killed outright (SIGKILL, OOM) loses no spend.

The step and its settlement are appended to a file of this worker's own before the answer is
released to the client, and marked written once the shared ledger (Redis) has them. A worker
that starts reads its file first and records every step not marked written: the ledger is
idempotent on the step id, so one that did land before the kill is not counted twice.

The file is written with plain `write(2)`, no fsync: a killed process loses nothing the
kernel already has; a machine that loses power loses what the page cache held. It is cut
back to nothing whenever every step in it has been written and it has grown past
`_COMPACT_BYTES`. What is not covered: a stream's step is written ahead when the stream
ends, so a worker killed mid-stream loses that stream (the provider stops generating when
the connection drops; what it generated until then is not recorded).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from tollway.state.breakers import BreakerOutcome, BreakerPolicy
from tollway.state.guards import BudgetCheck, RateCheck, Settlement
from tollway.state.records import StepRecord

log = logging.getLogger("tollway.state.wal")
_COMPACT_BYTES = 4 * 1024 * 1024


class WriteAhead:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._open: set[str] = set()  # appended, not yet written to the ledger
        # "written" marks go out once per event-loop pass (or with the next entry), so under
        # load many share one write(2). One lost to a kill only means a step recorded again
        # on replay, which the ledger ignores (within its dedupe window).
        self._marks: list[bytes] = []
        self._flush_soon = False

    def close(self) -> None:
        """A clean stop with nothing open leaves no file behind."""
        if self._marks:
            os.write(self._fd, b"".join(self._marks))
        os.close(self._fd)
        if not self._open:
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:  # other workers' files are there
                pass

    def append(self, step: StepRecord, settle: Settlement | None) -> None:
        """Before the answer goes out: the step (and its settlement) as one line."""
        entry = orjson.dumps({"id": step.request_id, "step": step,
                              "settle": _settlement(settle) if settle is not None else None})
        if self._marks:
            entry = b"".join(self._marks) + entry
            self._marks.clear()
        os.write(self._fd, entry + b"\n")
        self._open.add(step.request_id)

    def written(self, record_id: str) -> None:
        """The ledger has it: mark it, and cut the file back once nothing is open."""
        if record_id not in self._open:
            return
        self._open.discard(record_id)
        self._marks.append(b'{"done":' + orjson.dumps(record_id) + b"}\n")
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if not self._marks:
            return
        if not self._open and os.fstat(self._fd).st_size > _COMPACT_BYTES:
            os.ftruncate(self._fd, 0)  # nothing is open: the whole file can go
        else:
            os.write(self._fd, b"".join(self._marks))
        self._marks.clear()

    def unwritten(self) -> list[tuple[StepRecord, Settlement | None]]:
        """The steps a previous process appended and never saw written, oldest first; they
        stay open until this process sees them written."""
        entries: dict[str, dict[str, Any]] = {}
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:  # the line a kill cut short
                    continue
                if "done" in obj:
                    entries.pop(obj["done"], None)
                elif "id" in obj:
                    entries[obj["id"]] = obj
        out = []
        for rid, obj in entries.items():
            try:
                out.append((_step(obj["step"]), _from_settlement(obj["settle"])))
            except (KeyError, TypeError, ValueError):
                log.warning("unreadable write-ahead entry %s dropped", rid)
                continue
            self._open.add(rid)
        if not entries:
            os.ftruncate(self._fd, 0)
        return out


def _fields(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies (~10 µs a check), on the hot path here.
    return {n: getattr(obj, n) for n in names}


_BUDGET = tuple(f.name for f in fields(BudgetCheck))
_RATE = tuple(f.name for f in fields(RateCheck))
_OUTCOME = tuple(f.name for f in fields(BreakerOutcome) if f.name != "policy")
_POLICY = tuple(f.name for f in fields(BreakerPolicy))


def _settlement(s: Settlement) -> dict[str, Any]:
    return {"request_id": s.request_id,
            "budgets": [[_fields(bc, _BUDGET), actual] for bc, actual in s.budgets],
            "token_rates": [[_fields(rc, _RATE), delta] for rc, delta in s.token_rates],
            "breakers": [{**_fields(o, _OUTCOME), "policy": _fields(o.policy, _POLICY)}
                         for o in s.breakers]}


def _from_settlement(d: dict[str, Any] | None) -> Settlement | None:
    if d is None:
        return None
    return Settlement(
        request_id=d["request_id"],
        budgets=[(BudgetCheck(**bc), actual) for bc, actual in d["budgets"]],
        token_rates=[(RateCheck(**rc), delta) for rc, delta in d["token_rates"]],
        breakers=[BreakerOutcome(**{**o, "policy": BreakerPolicy(**o["policy"])})
                  for o in d["breakers"]])


def _step(d: dict[str, Any]) -> StepRecord:
    return StepRecord(**{**d, "tags": tuple(d.get("tags", ())),
                         "flags": tuple(d.get("flags", ())),
                         "tool_calls": tuple(d.get("tool_calls", ()))})
