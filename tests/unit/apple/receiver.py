"""A stand-in notification endpoint for simulator tests: records posts, answers scripted statuses."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class Receiver:
    """Answers each POST with the next scripted status (then ``default``) and keeps what it got."""

    def __init__(self, statuses: list[int] | None = None, default: int = 200) -> None:
        self.statuses = list(statuses or [])
        self.default = default
        self.posts: list[tuple[str | None, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.posts.append(
            (request.headers.get("Authorization"), orjson.loads(await request.read()))
        )
        status = self.statuses.pop(0) if self.statuses else self.default
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of_type(self, notification_type: str) -> list[dict[str, Any]]:
        return [body for _, body in self.posts if body["notificationType"] == notification_type]
