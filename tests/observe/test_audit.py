"""The audit chain: written in order, rotated without a break, and tampering found at the
line where it happened; the same on the shared Redis stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson

from tollway.config.model import RedisConfig
from tollway.observe.audit import Audit, FileSink, RedisSink, verify


def write(sink: FileSink | RedisSink, n: int, start: int = 0) -> None:
    async def run() -> None:
        audit = Audit(sink)
        for i in range(start, start + n):
            audit.append("step", {"request_id": f"req_{i}", "cost_usd": i / 100})
        await audit.flush()
    asyncio.run(run())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tollway", "audit", *args],
                          capture_output=True, text=True)


def test_chain_verifies_and_tampering_is_found_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(FileSink(str(path), 100, 3), 10)
    assert verify([str(path)]) == (True, verify([str(path)])[1])
    assert cli("verify", str(path)).returncode == 0
    lines = path.read_bytes().splitlines(keepends=True)
    # edited: line 4's cost changed
    rec = orjson.loads(lines[3])
    rec["data"]["cost_usd"] = 0
    edited = [*lines[:3], orjson.dumps(rec) + b"\n", *lines[4:]]
    path.write_bytes(b"".join(edited))
    ok, report = verify([str(path)])
    assert not ok and report.startswith(f"{path}:4: record 4 does not match its hash")
    out = cli("verify", str(path))
    assert out.returncode == 1 and f"{path}:4:" in out.stderr
    # deleted: line 6 gone
    path.write_bytes(b"".join(lines[:5] + lines[6:]))
    ok, report = verify([str(path)])
    assert not ok and report.startswith(f"{path}:6: record 7 does not follow record 5")
    # reordered
    path.write_bytes(b"".join([*lines[:2], lines[3], lines[2], *lines[4:]]))
    assert verify([str(path)])[1].startswith(f"{path}:3:")
    # the last line removed cannot be seen from the file alone, but the next run continues
    # the chain from the hash it finds, so a later verify of old + new still holds


def test_rotation_keeps_one_chain_and_restarts_continue_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(FileSink(str(path), 0.001, 5), 30)  # ~1 KB files: several rotations
    write(FileSink(str(path), 0.001, 5), 5, start=30)  # a restart continues the chain
    files = sorted(tmp_path.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(files) >= 2
    ok, report = verify([*map(str, files), str(path)])
    assert ok, report
    seqs = [orjson.loads(line)["seq"] for f in [*files, path]
            for line in f.read_bytes().splitlines()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_redis_stream_sink_is_one_chain_for_every_writer(tmp_path: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    rc = RedisConfig(url=redis_server.url, key_prefix="audit-test")
    a = RedisSink(rc, 10_000)
    b = RedisSink(rc, 10_000)  # another replica
    write(a, 5)
    write(b, 5, start=5)
    write(a, 5, start=10)
    out = tmp_path / "export.jsonl"
    with out.open("wb") as f:
        assert a.export(f) == 15
    ok, report = verify([str(out)])
    assert ok, report
    recs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["data"]["request_id"] for r in recs] == [f"req_{i}" for i in range(15)]
    assert all(r["alg"] == "sha1" for r in recs)
    recs[7]["data"]["cost_usd"] = 99
    out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    assert verify([str(out)])[1].startswith(f"{out}:8: record 8 does not match")


def test_redis_stream_sink_on_a_cluster(tmp_path: Path, redis_cluster) -> None:  # type: ignore[no-untyped-def]
    """Writers seeded from two nodes that do not own the slot extend one chain, on the
    node that does; a cluster that is not there yet does not stop a sink being built."""
    from tests.conftest import free_port

    nowhere = RedisSink(RedisConfig(url=f"redis://127.0.0.1:{free_port()}", cluster=True),
                        10_000)  # connects on first write, not here
    nowhere.close()
    one, other = redis_cluster.primaries_by_slot()[1:]
    a = RedisSink(RedisConfig(url=one.url, cluster=True, key_prefix="audit-test"), 10_000)
    b = RedisSink(RedisConfig(url=other.url, cluster=True, key_prefix="audit-test"), 10_000)
    try:
        write(a, 5)
        write(b, 5, start=5)
        out = tmp_path / "export.jsonl"
        with out.open("wb") as f:
            assert b.export(f) == 10
        ok, report = verify([str(out)])
        assert ok, report
        owner = redis_cluster.owner("{audit-test}:audit")
        assert owner.call("XLEN", "{audit-test}:audit") == 10
    finally:
        a.close()
        b.close()


def test_verify_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    out = cli("verify", str(tmp_path / "nope.jsonl"))
    assert out.returncode == 2
