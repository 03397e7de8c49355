"""Serve a Google simulator (EMM or Pub/Sub) on ``host:port`` (0 picks a free port), in-process."""

from __future__ import annotations

from typing import Generic, Protocol, Self, TypeVar

from aiohttp import web

from broker.httpserve import start_site
from broker.lifecycle import AsyncService, Lifecycle


class Servable(Protocol):
    def app(self) -> web.Application: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Servable)


class ServedSimulator(AsyncService, Generic[S]):
    """``simulator`` behind a local HTTP server; ``token_url`` is its OAuth token endpoint.
    ``async with`` or ``start()`` / ``stop()`` (the one lifecycle, no restart)."""

    def __init__(self, simulator: S, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.lifecycle = Lifecycle(type(self).__name__)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    async def start(self) -> Self:
        await self.lifecycle.start(self._start)
        return self

    async def _start(self) -> None:
        self._runner, _, self.port = await start_site(self.simulator.app(), self._host, self._port)

    async def stop(self) -> None:
        await self.lifecycle.stop(self._halt)

    async def _halt(self) -> None:
        await self.simulator.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
