"""Routing: YAML rules that pick the model, and the fallbacks to try when it fails."""
