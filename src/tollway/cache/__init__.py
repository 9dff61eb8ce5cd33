"""Response caches: exact (a hash of the normalised request) and semantic."""
