"""Upstream providers (OpenAI-compatible, Anthropic, the in-process demo) and the model registry."""
