"""Semantic cache building blocks: embedders, near-miss guards, vector indexes and the matcher.

Pure and synchronous: the gateway runs them in an executor and owns partitioning, storage of
cached responses and expiry.
"""

from .embedder import Embedder, HashingEmbedder, WordLlamaEmbedder, normalize_rows
from .guards import near_miss
from .index import PartitionedIndex, VectorIndex
from .matcher import DEFAULT_THRESHOLD, SemanticMatcher

__all__ = [
    "DEFAULT_THRESHOLD",
    "Embedder",
    "HashingEmbedder",
    "PartitionedIndex",
    "SemanticMatcher",
    "VectorIndex",
    "WordLlamaEmbedder",
    "near_miss",
    "normalize_rows",
]
