"""Webhook mode: Telegram posts updates to us (aiogram's aiohttp integration), with a shared
secret, plus ``GET /healthz`` on the same listener. Polling stays the default."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from aiogram import Bot
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from pydantic import ValidationError

from bot.app import App, build_app, build_bot
from bot.config import Config, parse_listen

log = logging.getLogger(__name__)


class UpdateHandler(SimpleRequestHandler):
    """aiogram's webhook handler, answering 200 only once the update is in the inbox (the
    inbox carries it out in the background), and 400 to a body that is not an update."""

    def __init__(self, app: App, bot: Bot, secret: str) -> None:
        # not handle_in_background: aiogram's background mode answers before anything is kept
        super().__init__(app.dispatcher, bot, handle_in_background=False, secret_token=secret)
        self._app = app

    async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
        try:
            update = Update.model_validate(
                await request.json(loads=bot.session.json_loads), context={"bot": bot}
            )
        except (ValueError, ValidationError) as err:  # JSONDecodeError is a ValueError
            log.warning("webhook: a request that is not an update (%s): 400", type(err).__name__)
            return web.Response(status=400, text="Bad Request: not a Telegram update")
        await self.dispatcher.feed_update(bot, update, **self.data)
        # kept on disk before the 200 (a burst of requests shares one sync)
        await self._app.services.storage.flush()
        return web.json_response({})


def build_web_app(app: App, bot: Bot, path: str, secret: str) -> web.Application:
    """The aiohttp application: updates at ``path`` (secret checked: 401 otherwise), and
    ``/healthz``."""
    web_app = web.Application()
    UpdateHandler(app, bot, secret).register(web_app, path=path)

    async def healthz(_: web.Request) -> web.Response:
        report = app.client.health.report()
        since = datetime.fromtimestamp(report.since, UTC).isoformat(timespec="seconds")
        return web.json_response({"status": report.status, "since": since}, dumps=json.dumps)

    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", app.metrics.handle)
    setup_application(web_app, app.dispatcher, bot=bot)
    return web_app


async def run_webhook(
    config: Config, url: str, listen: str, secret: str, path: Path | None = None
) -> None:
    """Serve until SIGINT/SIGTERM (SIGHUP reloads the config); commands in flight finish
    first."""
    host, port = parse_listen(listen)
    app = build_app(config, path=path, check_portal=True)
    bot = build_bot(config, app.metrics)
    web_app = build_web_app(app, bot, urlsplit(url).path or "/", secret)
    runner = web.AppRunner(web_app, access_log=None)  # access lines would carry nothing useful
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await bot.set_webhook(
            url,
            secret_token=secret,
            allowed_updates=app.dispatcher.resolve_used_update_types(),
            drop_pending_updates=False,  # commands sent while we were down are still carried out
        )
        await stop.wait()
    finally:
        await runner.cleanup()  # runs the dispatcher's shutdown: in-flight commands finish
        await bot.session.close()
