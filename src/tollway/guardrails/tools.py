"""Guardrails on tool traffic: the arguments of a call before it goes to the tool (HTTP
`/tools` or an MCP server), and what the tool answered before the agent reads it.

Arguments and results are JSON where they can be (every string in them is a text; a
redaction keeps the JSON's shape), plain text otherwise. A result is where injected
instructions arrive (a web page, an email, a ticket the tool fetched): `tool_results` rules
with the `injection` detector are the indirect-injection firewall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tollway.exchange import Caller

from .act import Context, Enforcer
from .redact import Redactor
from .slots import strings


@dataclass(slots=True)
class Checked:
    value: Any  # the (possibly redacted) arguments or result
    changed: bool
    summary: str  # "rule (ENTITY), ..." when something was found


class ToolGuardrails:
    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer
        self.g = enforcer.g

    def applies(self, where: str, caller: Caller, tool: str) -> bool:
        return bool(self.g.applicable(where, caller.agent, caller.team, tool))

    async def check(self, where: str, caller: Caller, session: str, request_id: str,
                    tool: str, value: Any, flags: list[str]) -> Checked:
        """Check a decoded JSON value (or a str); raises GatewayError(403) on a block."""
        app = self.g.applicable(where, caller.agent, caller.team, tool)
        if not app:
            return Checked(value, False, "")
        holder = [value]
        slots = strings(holder, where, [])
        verdict = await self.g.check_judged(slots, {where: app})
        redactor = Redactor()
        ctx = Context(caller, session, request_id, where, tool, flags)
        taken = await self.enforcer.enforce(verdict, slots, redactor, ctx)
        return Checked(holder[0], bool(redactor.placeholders), verdict.summary()
                       if taken is not None else "")

    async def check_bytes(self, where: str, caller: Caller, session: str, request_id: str,
                          tool: str, data: bytes, flags: list[str],
                          ) -> tuple[bytes, str]:
        """A body as bytes: JSON checked as JSON, else as text. Returns the bytes to send
        and the summary of what was found."""
        try:
            value: Any = orjson.loads(data)
            is_json = True
        except orjson.JSONDecodeError:
            value, is_json = data.decode("utf-8", "replace"), False
        checked = await self.check(where, caller, session, request_id, tool, value, flags)
        if not checked.changed:
            return data, checked.summary
        out = orjson.dumps(checked.value) if is_json else str(checked.value).encode()
        return out, checked.summary
