"""Serve an aiohttp application on a host and port (0 picks a free one) and learn the bound port.

Shared by the broker's HTTP server and the vendor simulators, so all of them start, report their
port and shut down the same way (no signal handlers: the CLI owns signals).
"""

from __future__ import annotations

import ssl

from aiohttp import web


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout_s: float = 1.0,
) -> tuple[web.AppRunner, web.TCPSite, int]:
    """Start ``app``; returns the runner (``cleanup()`` it to stop), the site and the bound port."""
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, site, bound
