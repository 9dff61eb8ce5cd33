"""VectorIndex / PartitionedIndex: exact scores, brute force vs usearch int8, eviction, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest

from tollway.cache.semantic import PartitionedIndex, VectorIndex, normalize_rows

DIM = 64


def vectors(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    return normalize_rows(np.random.default_rng(seed).standard_normal((n, DIM)))


def near(vector: npt.NDArray[np.float32], noise: float, seed: int) -> npt.NDArray[np.float32]:
    jitter = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    row: npt.NDArray[np.float32] = normalize_rows(vector + noise * jitter)[0]
    return row


def test_add_search_remove_brute_force() -> None:
    index = VectorIndex(DIM)
    data = vectors(50)
    for key, vec in enumerate(data):
        index.add(key, vec)
    assert len(index) == 50 and not index.uses_ann
    found = index.search(data[7], k=3)
    assert found[0][0] == 7 and found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    assert index.remove(7) and not index.remove(7)
    assert 7 not in index and len(index) == 49
    assert all(key != 7 for key, _ in index.search(data[7], k=49))
    assert index.search(data[7], k=0) == []
    assert VectorIndex(DIM).search(data[0]) == []


def test_add_replaces_an_existing_key() -> None:
    index = VectorIndex(DIM)
    a, b = vectors(2)
    index.add(1, a)
    index.add(1, b)
    assert len(index) == 1
    assert index.search(b, k=1)[0] == (1, pytest.approx(1.0, abs=1e-5))


def test_scores_are_exact_cosines_of_unnormalised_input() -> None:
    index = VectorIndex(DIM)
    data = vectors(5)
    for key, vec in enumerate(data):
        index.add(key, 3.0 * vec)  # stored normalised
    query = near(data[2], 0.3, seed=1)
    for key, score in index.search(5 * query, k=5):
        assert score == pytest.approx(float(data[key] @ query), abs=1e-5)


def test_rejects_bad_keys_and_dims() -> None:
    index = VectorIndex(DIM)
    with pytest.raises(ValueError):
        index.add(-1, vectors(1)[0])
    with pytest.raises(ValueError):
        index.add(1, np.ones(DIM + 1))
    with pytest.raises(ValueError):
        index.search(np.ones(DIM - 1))
    with pytest.raises(ValueError):
        index.add(2, np.zeros(DIM))


def test_brute_force_and_usearch_agree() -> None:
    data = vectors(3000, seed=2)
    exact = VectorIndex(DIM, brute_force_max=10**9)
    ann = VectorIndex(DIM, brute_force_max=256)
    for key, vec in enumerate(data):
        exact.add(key, vec)
        ann.add(key, vec)
    assert ann.uses_ann and not exact.uses_ann
    agree = 0
    for i in range(200):
        query = near(data[i * 13], 0.2, seed=i)
        want, got = exact.search(query, k=5), ann.search(query, k=5)
        agree += want[0][0] == got[0][0]
        for key, score in got:  # re-scored from float16: close to the exact cosine
            assert score == pytest.approx(float(data[key] @ query), abs=2e-3)
    assert agree >= 198


def test_usearch_path_survives_removal_and_returns_to_brute_force() -> None:
    data = vectors(400, seed=3)
    index = VectorIndex(DIM, brute_force_max=256)
    for key, vec in enumerate(data):
        index.add(key, vec)
    assert index.uses_ann
    index.add(5, data[6])  # replace inside the graph
    assert index.search(data[6], k=2)[0][1] == pytest.approx(1.0, abs=2e-3)
    for key in range(300):
        index.remove(key)
    assert not index.uses_ann and len(index) == 100
    found = index.search(data[350], k=1)
    assert found[0][0] == 350 and found[0][1] == pytest.approx(1.0, abs=2e-3)


def test_partitions_are_isolated() -> None:
    index = PartitionedIndex(DIM)
    a, b = vectors(2)
    index.add("p1", 1, a)
    index.add(("p2", 7), 2, b)
    assert index.search("p1", b, k=5) == [(1, pytest.approx(float(a @ b), abs=1e-5))]
    assert index.search("missing", a) == []
    assert len(index) == 2 and index.size == 2 and "p1" in index


def test_global_cap_evicts_oldest_entries_first() -> None:
    index = PartitionedIndex(DIM, max_vectors=4)
    data = vectors(10)
    assert index.add("a", 0, data[0]) == []
    index.add("b", 1, data[1])
    index.add("a", 2, data[2])
    index.add("c", 3, data[3])
    index.add("a", 0, data[0])  # renewing key 0 makes key 1 the oldest
    assert index.add("c", 4, data[4]) == [("b", 1)]
    assert "b" not in index  # an emptied partition goes away
    assert index.add("d", 5, data[5]) == [("a", 2)]
    assert index.size == 4
    assert [key for key, _ in index.search("a", data[0], k=5)] == [0]


def test_remove_and_drop_keep_the_count_right() -> None:
    index = PartitionedIndex(DIM, max_vectors=10)
    data = vectors(6)
    for key in range(3):
        index.add("a", key, data[key])
        index.add("b", key, data[key + 3])
    assert index.remove("a", 1) and not index.remove("a", 1) and not index.remove("x", 1)
    assert index.drop("b") == 3 and index.drop("b") == 0
    assert index.size == 2 and index.partition_size("a") == 2
    for key in range(20):  # the cap still counts only what is left
        index.add("c", key, data[key % 6])
    assert index.size == 10 and "a" not in index


def test_failed_add_leaves_no_empty_partition() -> None:
    index = PartitionedIndex(DIM)
    with pytest.raises(ValueError):
        index.add("p", 1, np.ones(3))
    assert "p" not in index and index.size == 0


def test_concurrent_add_search_remove() -> None:
    index = PartitionedIndex(DIM, max_vectors=1500, brute_force_max=64)
    data = vectors(4000, seed=4)

    def worker(worker_id: int) -> int:
        found = 0
        for i in range(500):
            key = worker_id * 1000 + i
            part = f"p{i % 3}"
            index.add(part, key, data[key % 4000])
            found += bool(index.search(part, data[key % 4000], k=3))
            if i % 7 == 0:
                index.remove(part, key)
        return found

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(worker, range(4)))
    assert all(found == 500 for found in results)
    assert index.size <= 1500
    assert index.size == sum(index.partition_size(f"p{i}") for i in range(3))
