"""Wire dialects: parsing, usage extraction, SSE observation and error bodies."""
