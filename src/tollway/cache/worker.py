"""The semantic cache's own thread: embedding and search never run on the event loop.

A plain executor hands each job over on its own, and every hand-over needs the GIL twice
(the thread to start, the loop to learn the result); when the loop thread is busy each of
those waits can reach the interpreter's switch interval, so under load lookups queue behind
one another and miss their deadline. This worker takes everything queued at once: the texts
of all waiting lookups are embedded in one call, and all results go back in one hand-over.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Job = tuple[str, tuple[Any, ...], asyncio.Future[Any]]  # (kind, args, future)
Batch = Callable[[list[tuple[str, tuple[Any, ...]]]], list[tuple[bool, Any]]]
_STOP = ("stop", (), None)


class BatchWorker:
    """One daemon thread; `run(kind, *args)` from the loop, `handle(jobs)` on the thread
    returns one ``(ok, value_or_exception)`` per job, in order."""

    def __init__(self, handle: Batch, name: str = "tollway-semantic") -> None:
        self._handle = handle
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.pending = 0  # jobs queued or running, including those nobody waits for now
        self.closed = False

    def run(self, kind: str, *args: Any) -> asyncio.Future[Any]:
        if self.closed:
            raise RuntimeError("the semantic cache worker is stopped")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending += 1
        self._queue.put((kind, args, fut))
        return fut

    def stop(self) -> None:
        self.closed = True
        self._queue.put(_STOP)

    def _loop(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while True:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(j is _STOP for j in jobs)
            jobs = [j for j in jobs if j is not _STOP]
            if jobs:
                try:
                    results = self._handle([(kind, args) for kind, args, _ in jobs])
                except BaseException as exc:  # a bug: fail the batch, keep the thread
                    log.exception("semantic cache worker failed")
                    results = [(False, exc)] * len(jobs)
                loop = jobs[0][2].get_loop()
                try:
                    loop.call_soon_threadsafe(self._deliver, jobs, results)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return
            if stop:
                return

    def _deliver(self, jobs: list[Job], results: list[tuple[bool, Any]]) -> None:
        self.pending -= len(jobs)
        for (_, _, fut), (ok, value) in zip(jobs, results, strict=True):
            if fut.done():  # its caller gave up (deadline)
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
