"""The numbers an admin watches: Prometheus metrics of one running bot.

Each bot has a registry of its own (several bots in one test process never mix counts), and
serves it at ``GET /metrics``: on the webhook listener, or in polling mode on ``--metrics
HOST:PORT``. Counting goes through the attributes here; nothing registers into
``prometheus_client``'s global default registry.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# seconds: a Bitrix24 answer takes 50 ms on a good day, 10 s at the timeout
_REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# seconds in the rate bucket: nothing most of the time, up to a minute in a burst
_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric of the bot, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.commands = Counter(
            "handoff_commands",
            "Commands and taps handled, by command and outcome",
            ["command", "outcome"],
            registry=registry,
        )
        self.dialog_actions = Counter(
            "handoff_dialog_actions",
            "Transfers and finishes, one per dialog, by outcome and Bitrix24 code (ok if none)",
            ["action", "outcome", "code"],
            registry=registry,
        )
        self.bitrix24_request_seconds = Histogram(
            "handoff_bitrix24_request_seconds",
            "Bitrix24 REST requests, by method (batch for a batched request), failed ones too",
            ["method"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.bitrix24_errors = Counter(
            "handoff_bitrix24_errors",
            "Bitrix24 requests that failed, by method and code",
            ["method", "code"],
            registry=registry,
        )
        self.bucket_wait_seconds = Histogram(
            "handoff_bitrix24_bucket_wait_seconds",
            "Time a Bitrix24 request waited for the portal's rate bucket before it left",
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.telegram_429 = Counter(
            "handoff_telegram_429",
            "Telegram flood-control refusals (HTTP 429), by Bot API method",
            ["method"],
            registry=registry,
        )
        self.inbox_backlog = Gauge(
            "handoff_inbox_backlog",
            "Updates kept in the inbox and not yet finished",
            registry=registry,
        )
        self.announcement_posts = Counter(
            "handoff_announcement_posts",
            "Team-chat posts: new messages (sent) and grown ones (edited)",
            ["how"],
            registry=registry,
        )
        self.announcement_lines_coalesced = Counter(
            "handoff_announcement_lines_coalesced",
            "Announcement lines that shared a post with another line",
            registry=registry,
        )
        self.config_reloads = Counter(
            "handoff_config_reloads",
            "Config reloads (/reload or SIGHUP), by outcome: changed, unchanged, failed",
            ["outcome"],
            registry=registry,
        )
        self.bitrix24_degraded = Gauge(
            "handoff_bitrix24_degraded",
            "1 while Bitrix24 fails as a whole (what /healthz calls degraded), else 0",
            registry=registry,
        )

    def watch(self, backlog: Callable[[], int], degraded: Callable[[], bool]) -> None:
        """Read the inbox backlog and the health when scraped, not on every change."""
        self.inbox_backlog.set_function(lambda: float(backlog()))
        self.bitrix24_degraded.set_function(lambda: 1.0 if degraded() else 0.0)

    async def handle(self, _: web.Request) -> web.Response:
        """``GET /metrics``: the text exposition format."""
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """A listener that serves only ``GET /metrics`` (polling mode); the caller cleans it up."""
    web_app = web.Application()
    web_app.router.add_get("/metrics", metrics.handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
