"""What /metrics exposes beyond tollway's own families."""

from __future__ import annotations


def test_process_metrics_are_there_and_created_twins_are_not() -> None:
    from tollway.observe.metrics import Metrics

    m = Metrics()
    m.requests.labels("chat", "a", "t", "m", "p", "200").inc()
    text = m.exposition().decode()
    for family in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                   "process_open_fds", "python_info"):
        assert f"\n{family}" in text or text.startswith(family), family
    assert "_created" not in text
