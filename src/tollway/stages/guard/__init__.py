"""The guards: kill switch, rate limits, budgets and loop halting, in one state round trip."""

from tollway.stages.guard.stage import Guard

__all__ = ["Guard"]
