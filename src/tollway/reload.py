"""Hot reload: a valid new config swaps the whole runtime (providers, models, stage chain)
atomically; in-flight requests finish on the one they started with. An invalid config is
rejected with its problems logged and the old one keeps serving. So is one that is empty
or would leave no model (a file truncated while it was being written, or saved half-way by
an editor, is valid YAML often enough: it would answer every request 404), and the watcher
waits for the file to stop changing (two polls alike) before it reads it.

Triggers: the config file changing on disk (polled), SIGHUP, and POST /admin/reload.
`server` and `state` changes need a restart (listening sockets and shared state are not
swapped under live traffic); a reload that changes them applies the rest and says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollway.config import ConfigError, load_config
from tollway.config.load import Problem
from tollway.config.model import Config

if TYPE_CHECKING:
    from tollway.gateway import Gateway, Runtime

log = logging.getLogger("tollway.reload")


class Reloader:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._lock = asyncio.Lock()
        self._mtime = self._stat()
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def _stat(self) -> tuple[float, ...] | None:
        """The config file's mtime, and its policy files' (a policy edit reloads too)."""
        path = self.gw.config_path
        if not path:
            return None
        try:
            stamps = [os.stat(path).st_mtime_ns]
        except OSError:
            return None
        for f in self.gw.config.policy.files:
            try:
                stamps.append(os.stat(f).st_mtime_ns)
            except OSError:
                stamps.append(0)
        return tuple(stamps)

    def start(self) -> None:
        interval = self.gw.config.server.watch_interval_s
        if self.gw.config_path and interval > 0:
            self._watcher = asyncio.create_task(self._watch(interval))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._retiring):
            task.cancel()

    async def _watch(self, interval: float) -> None:
        seen = self._mtime
        while True:
            await asyncio.sleep(interval)
            mtime = self._stat()
            if mtime is not None and mtime != self._mtime and mtime == seen:
                await self.reload("file changed")  # changed, and unchanged since last poll
            seen = mtime

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Load, validate and swap. Returns what happened, for the admin API."""
        gw = self.gw
        async with self._lock:
            self._mtime = self._stat()
            try:
                if not gw.config_path:
                    raise ConfigError([])
                cfg = load_config(gw.config_path)
                _complete(cfg, gw.config_path)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems] or ["no config file to reload"]
                gw.metrics.config_reloads.labels("invalid").inc()
                log.error("config reload rejected; the old config keeps serving", extra={
                    "fields": {"trigger": trigger, "problems": problems}})
                return {"result": "invalid", "problems": problems}
            try:
                runtime = await gw.build_runtime(cfg)
            except Exception as exc:  # a provider that cannot be built, say
                gw.metrics.config_reloads.labels("invalid").inc()
                log.exception("config reload failed while building; the old config keeps "
                              "serving", extra={"fields": {"trigger": trigger}})
                return {"result": "invalid", "problems": [f"{type(exc).__name__}: {exc}"]}
            restart = [s for s in ("server", "state", "audit")
                       if getattr(cfg, s) != getattr(gw.config, s)]
            old = gw.runtime
            gw.runtime = runtime  # the swap: new requests take the new chain from here on
            gw.config = cfg.model_copy(update={"server": gw.config.server,
                                               "state": gw.config.state,
                                               "audit": gw.config.audit})
            if old is not None:
                task = asyncio.create_task(self._retire(old))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            gw.metrics.config_reloads.labels("ok").inc()
            if gw.audit is not None and trigger != "admin API":  # the API records its own
                gw.audit.append("admin", {"action": "reload", "trigger": trigger,
                                          "result": "ok"})
            log.info("config reloaded", extra={"fields": {
                "trigger": trigger, "models": len(cfg.models), "rules": len(cfg.routing),
                "needs_restart": restart}})
            return {"result": "ok", "needs_restart": restart,
                    "stages": runtime.chain.names}

    async def _retire(self, old: Runtime) -> None:
        """Close the old runtime's connection pools once its last request is done."""
        try:
            await asyncio.wait_for(old.idle.wait(), self.gw.config.server.drain_timeout_s)
        except TimeoutError:
            log.warning("requests still running on the old config after the drain timeout")
        await old.close()


def _complete(cfg: Config, path: str) -> None:
    """Refuse what no operator means to run: an empty file, or a config with no model."""
    try:
        empty = not Path(path).read_text().strip()
    except OSError:
        empty = False  # load_config read it a moment ago; its own error would have said
    if empty:
        raise ConfigError([Problem(path, None, "", "the file is empty (truncated while it "
                                   "was written?); the running config keeps serving")])
    if not cfg.models:
        raise ConfigError([Problem(path, None, "models", "the new config has no models: "
                                   "every request would get 404; the running config keeps "
                                   "serving")])
