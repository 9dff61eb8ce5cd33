"""All mutable state behind one interface: in memory by default, Redis when shared."""

from tollway.state.base import SpendRow, State, StepRecord

__all__ = ["SpendRow", "State", "StepRecord"]
