"""The HTTP ceiling: a bare aiohttp handler that reads the body and answers 200, doing no work.

``python -m bench.peers.bare_aiohttp PORT`` (the broker's own environment: same aiohttp). Uses
uvloop when it is installed, as the broker does, so the ceiling is not lowered by the loop.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def _handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200)


def main() -> None:
    app = web.Application()
    app.router.add_post("/apple/{tenant}/notifications", _handle)
    app.router.add_get("/readyz", lambda r: _ok())
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        print=None,
        access_log=None,
        loop=loop_factory() if loop_factory else None,
    )


async def _ok() -> web.Response:
    return web.Response(status=200)


if __name__ == "__main__":
    main()
