"""The stage chain: each concern a stage with request and response hooks, absent when off."""

from tollway.stages.base import Chain, Stage

__all__ = ["Chain", "Stage"]
