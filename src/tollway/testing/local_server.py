"""The lifecycle the test servers share: serve an aiohttp app on loopback, report its URL."""

from __future__ import annotations

import abc

from aiohttp import web


class LocalServer(abc.ABC):
    """Subclasses build their app in `app()`; `start()` listens and returns the base URL."""

    what = "server"  # for error messages

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @abc.abstractmethod
    def app(self) -> web.Application:
        """The application to serve."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 = ephemeral) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError(f"{self.what} already started")
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self._base_url = f"http://{shown}:{bound[1]}"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        """The URL returned by :meth:`start`, e.g. ``http://127.0.0.1:54321``."""
        if self._base_url is None:
            raise RuntimeError(f"{self.what} not started")
        return self._base_url
