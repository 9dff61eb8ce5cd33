"""tollway: an AgentOps gateway between agents and the models and tools they call."""

__version__ = "0.1.0"
