"""All mutable state behind one interface: in memory by default, Redis when shared."""

from tollway.state.base import State
from tollway.state.records import SpendRow, StepRecord

__all__ = ["SpendRow", "State", "StepRecord"]
