"""Serving a fake on 127.0.0.1: the part every sandbox server shares."""

from __future__ import annotations

from aiohttp import web


async def serve(
    app: web.Application, host: str, port: int, *, cancel_on_disconnect: bool = False
) -> tuple[web.AppRunner, str]:
    """Start ``app`` on ``host:port`` (0: any free port); returns its runner and base URL
    ``http://HOST:PORT``. No access log: request paths may carry secrets (a bot token, a
    webhook code)."""
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=1.0,
        handle_signals=False,
        handler_cancellation=cancel_on_disconnect,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    netloc = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{netloc}:{bound_port}"
