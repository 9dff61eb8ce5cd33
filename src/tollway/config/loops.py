"""Loop detection: what counts as an agent going round in circles, and whether to halt it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tollway.config.base import Strict


class LoopAction(Strict):
    action: Literal["halt", "alert"] = "halt"


class RepeatedToolCall(LoopAction):
    """The same tool, same arguments, same result, this many times in the conversation."""

    threshold: int = Field(3, ge=2)


class NoProgress(LoopAction):
    """The same tool answering the same result this many times in a row in a session,
    whatever the arguments (ids, timestamps, durations and counters normalised away); a
    result that changes is progress. Model traffic: read from the conversation; tool calls
    through the gateway: counted per session and tool in the state."""

    threshold: int = Field(5, ge=2)


class RepeatedRequest(LoopAction):
    """The same request body this many times within window_s in one session."""

    threshold: int = Field(5, ge=2)
    window_s: float = Field(300, gt=0)


class PingPong(LoopAction):
    """Two agents handing one task back and forth more than max_rounds times."""

    max_rounds: int = Field(5, ge=1)


class MaxSteps(LoopAction):
    limit: int = Field(ge=1)


class MaxDuration(LoopAction):
    seconds: float = Field(gt=0)


class LoopsConfig(Strict):
    repeated_tool_call: RepeatedToolCall | None = None
    no_progress: NoProgress | None = None
    repeated_request: RepeatedRequest | None = None
    ping_pong: PingPong | None = None
    max_steps: MaxSteps | None = None
    max_duration: MaxDuration | None = None

    @property
    def any(self) -> bool:
        return any((self.repeated_tool_call, self.no_progress, self.repeated_request,
                    self.ping_pong, self.max_steps, self.max_duration))

    @property
    def stateful(self) -> bool:
        return any((self.repeated_request, self.ping_pong, self.max_steps, self.max_duration))
