"""Token counting: offline tiktoken encodings and a per-message memo."""
