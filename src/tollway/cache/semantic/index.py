"""In-process vector indexes for the semantic cache, one per partition.

A partition holds entries whose requests are identical except for the last user turn, so most
are tiny: those are searched by brute force (one small matmul, exact). Past ``brute_force_max``
vectors a partition moves to a usearch HNSW graph with int8 storage (about 50-120 us per query at
10k-100k), and the candidates it returns are re-scored exactly from a float16 copy, because int8
cosines are off by up to ~0.013, which is enough to cross a 0.9x threshold either way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

from .embedder import normalize_rows

__all__ = ["PartitionedIndex", "VectorIndex"]

_MAX_KEY = 2**63 - 1


class VectorIndex:
    """Cosine top-k over unit vectors keyed by ints; exact scores; thread-safe."""

    def __init__(
        self,
        dim: int,
        *,
        brute_force_max: int = 256,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> None:
        self.dim = dim
        self.brute_force_max = brute_force_max
        self._ann_params = {
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        self._lock = threading.Lock()
        self._rows: dict[int, int] = {}  # key -> row in _vectors
        self._keys: list[int] = []  # row -> key
        self._vectors: npt.NDArray[Any] = np.empty((8, dim), dtype=np.float32)
        self._ann: Any = None  # usearch.index.Index once the partition is large

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def uses_ann(self) -> bool:
        """Whether searches go through usearch (large partition) or brute force."""
        return self._ann is not None

    def keys(self) -> list[int]:
        with self._lock:
            return list(self._keys)

    def _unit(self, vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
        row = normalize_rows(np.asarray(vector, dtype=np.float32).reshape(-1))
        if row.shape[1] != self.dim:
            raise ValueError(f"vector has {row.shape[1]} dims, index has {self.dim}")
        unit: npt.NDArray[np.float32] = row[0]
        return unit

    def add(self, key: int, vector: npt.ArrayLike) -> None:
        """Insert or replace ``key``; the vector is L2-normalised here (and must not be zero)."""
        if not 0 <= key <= _MAX_KEY:
            raise ValueError("keys must be integers in [0, 2**63)")
        unit = self._unit(vector)
        if not unit.any():
            raise ValueError("a zero vector has no direction to compare")
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = len(self._keys)
                if row == len(self._vectors):
                    grown = np.empty((2 * row, self.dim), dtype=self._vectors.dtype)
                    grown[:row] = self._vectors
                    self._vectors = grown
                self._rows[key] = row
                self._keys.append(key)
            elif self._ann is not None:
                self._ann.remove(key)
            self._vectors[row] = unit
            if self._ann is not None:
                self._ann.add(key, unit, threads=1)
            elif len(self._keys) > self.brute_force_max:
                self._promote()

    def remove(self, key: int) -> bool:
        """Delete ``key``; returns whether it was present."""
        with self._lock:
            row = self._rows.pop(key, None)
            if row is None:
                return False
            last = len(self._keys) - 1
            if row != last:  # move the last row into the hole
                moved = self._keys[last]
                self._vectors[row] = self._vectors[last]
                self._keys[row] = moved
                self._rows[moved] = row
            self._keys.pop()
            if self._ann is not None:
                self._ann.remove(key)
                if len(self._keys) <= self.brute_force_max // 2:
                    self._demote()
            return True

    def search(self, vector: npt.ArrayLike, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` nearest keys with their exact cosine similarity, best first."""
        query = self._unit(vector)
        with self._lock:
            n = len(self._keys)
            if n == 0 or k <= 0:
                return []
            if self._ann is None:
                scores = self._vectors[:n] @ query
                rows = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
                return self._best(rows, scores[rows], k)
            # int8 ranks are approximate: over-fetch, then re-score from the float16 copy.
            found = self._ann.search(query, min(n, max(2 * k, k + 8)), threads=1)
            rows = np.fromiter((self._rows[int(key)] for key in found.keys), dtype=np.intp)
            scores = self._vectors[rows].astype(np.float32) @ query
            return self._best(rows, scores, k)

    def _best(
        self, rows: npt.NDArray[np.intp], scores: npt.NDArray[np.float32], k: int
    ) -> list[tuple[int, float]]:
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self._keys[int(rows[i])], float(scores[i])) for i in order]

    def _promote(self) -> None:
        """Move to usearch int8 + a float16 copy for re-scoring (half the memory of float32)."""
        from usearch.index import Index

        n = len(self._keys)
        ann = Index(
            ndim=self.dim,
            metric="cos",
            dtype="i8",
            connectivity=self._ann_params["connectivity"],
            expansion_add=self._ann_params["expansion_add"],
            expansion_search=self._ann_params["expansion_search"],
        )
        ann.add(np.asarray(self._keys, dtype=np.uint64), self._vectors[:n], threads=1)
        self._vectors = self._recast(np.float16)
        self._ann = ann

    def _demote(self) -> None:
        self._vectors = self._recast(np.float32)
        self._ann = None

    def _recast(self, dtype: type[np.floating[Any]]) -> npt.NDArray[Any]:
        """The live rows in a new buffer of ``dtype`` (rows past ``len`` are uninitialised)."""
        out = np.empty(self._vectors.shape, dtype=dtype)
        out[: len(self._keys)] = self._vectors[: len(self._keys)]
        return out


class PartitionedIndex:
    """``partition -> VectorIndex`` with a global vector cap (oldest entries evicted first).

    Age is insertion order (re-adding a key renews it), not last use: the cache entries behind
    the vectors expire by age too, and a hit never extends one. One lock guards everything, as
    the gateway calls in from executor threads.
    """

    def __init__(self, dim: int, *, max_vectors: int = 100_000, **index_params: int) -> None:
        if max_vectors <= 0:
            raise ValueError("max_vectors must be positive")
        self.dim = dim
        self.max_vectors = max_vectors
        self._index_params = index_params
        self._parts: dict[Hashable, VectorIndex] = {}
        self._order: OrderedDict[tuple[Hashable, int], None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Vectors held across all partitions."""
        return len(self._order)

    def __len__(self) -> int:
        return len(self._parts)

    def __contains__(self, partition: object) -> bool:
        return partition in self._parts

    def partition_size(self, partition: Hashable) -> int:
        part = self._parts.get(partition)
        return 0 if part is None else len(part)

    def add(
        self, partition: Hashable, key: int, vector: npt.ArrayLike
    ) -> list[tuple[Hashable, int]]:
        """Insert (or renew) ``key``; returns the ``(partition, key)`` entries evicted for room,
        so the caller can drop what it stored under them."""
        with self._lock:
            part = self._parts.get(partition)
            if part is None:
                part = self._parts[partition] = VectorIndex(self.dim, **self._index_params)
            try:
                part.add(key, vector)
            except Exception:
                if not len(part):
                    del self._parts[partition]
                raise
            entry = (partition, key)
            self._order[entry] = None
            self._order.move_to_end(entry)
            evicted: list[tuple[Hashable, int]] = []
            while len(self._order) > self.max_vectors:
                old, _ = self._order.popitem(last=False)
                self._remove_locked(*old)
                evicted.append(old)
            return evicted

    def search(
        self, partition: Hashable, vector: npt.ArrayLike, k: int = 5
    ) -> list[tuple[int, float]]:
        with self._lock:
            part = self._parts.get(partition)
            return [] if part is None else part.search(vector, k)

    def remove(self, partition: Hashable, key: int) -> bool:
        with self._lock:
            self._order.pop((partition, key), None)
            return self._remove_locked(partition, key)

    def drop(self, partition: Hashable) -> int:
        """Forget a whole partition; returns how many vectors it held."""
        with self._lock:
            part = self._parts.pop(partition, None)
            if part is None:
                return 0
            for key in part.keys():
                self._order.pop((partition, key), None)
            return len(part)

    def _remove_locked(self, partition: Hashable, key: int) -> bool:
        part = self._parts.get(partition)
        if part is None or not part.remove(key):
            return False
        if not len(part):
            del self._parts[partition]
        return True
