"""End-to-end harness: the real bot polling a fake Bot API, calling a simulated portal.

Everything between the two network edges is the product as it runs in production: the config
is loaded from YAML text, the aiogram ``Dispatcher`` polls over HTTP, the Bitrix24 client
POSTs over HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram import Bot, Router

from bot.app import App, build_app, build_bot
from bot.config import Config, load_config, parse_config
from bot.sandbox.portal import PortalSimulator
from bot.sandbox.telegram import FakeTelegram, SentMessage, TelegramLimits
from tests.conftest import make_portal

TOKEN = "4242424242:AAE_e2e-test-token-for-the-fake-bot-api"

OLGA, PETR, STRANGER = 111111111, 222222222, 999999999
TEAM_CHAT, OTHER_GROUP, UNLISTED_GROUP = -1001234567890, -1002222222222, -1009999999999

CONFIG_YAML = """
bitrix24:
  webhook_url: ${BITRIX24_WEBHOOK_URL}
  timeout_s: ${TIMEOUT_S:-3}
  deadline_s: ${DEADLINE_S:-6}
  rate_per_s: ${RATE:-1000}
  burst: ${BURST:-1000}
telegram:
  token: ${TELEGRAM_BOT_TOKEN}
  api_url: ${TELEGRAM_API_URL:-}
language: auto
admin_contact: "@it_ops"
button_expiry_min: ${EXPIRY_MIN:-15}
storage: {path: "${STORAGE_PATH:-:memory:}"}
supervisors:
  - {id: 111111111, name: Olga}
  - {id: 222222222, name: Petr}
chats:
  - {id: -1001234567890, name: Support leads}
  - {id: -1002222222222, name: Night shift}
announce_to: -1001234567890
operators:
  - {key: anna, bitrix_id: 15, name: Anna Smirnova, aliases: [anya], telegram: anna_s}
  - {key: bob, bitrix_id: 16, name: Bob Lee}
  - {key: irina, bitrix_id: 27, name: "Irina <Ira> & \\"Co\\""}
  - {key: pavel, bitrix_id: 28, name: Pavel Orlov}
queues:
  - {key: support, bitrix_id: 3, name: Support line, aliases: [sup]}
  - {key: sales, bitrix_id: 5, name: Sales <line>}
"""


CROWD = 7000  # Telegram IDs of the extra supervisors of :func:`with_supervisors`


def fakes_env(portal: PortalSimulator, telegram: FakeTelegram, **more: str) -> dict[str, str]:
    """What the bot reads from its environment to reach the two fakes (and ``more``)."""
    return {
        "BITRIX24_WEBHOOK_URL": portal.url,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": telegram.base_url,
        **more,
    }


def with_supervisors(count: int, yaml_text: str = CONFIG_YAML) -> str:
    """The config with ``count`` more supervisors, IDs ``CROWD``, ``CROWD + 1``, ...

    Telegram allows about one message a second per chat, and the bot keeps to it: tests that
    need many replies quickly spread their commands over many supervisors' chats.
    """
    crowd = "".join(f"  - {{id: {CROWD + i}, name: S{i}}}\n" for i in range(count))
    return yaml_text.replace("supervisors:\n", "supervisors:\n" + crowd, 1)


@dataclass
class Harness:
    """A running bot with its two fakes, and ways to talk to it."""

    telegram: FakeTelegram
    portal: PortalSimulator
    config: Config
    app: App
    bot: Bot

    async def say(
        self,
        text: str,
        *,
        user: int = OLGA,
        chat: int | None = None,
        language: str | None = "en",
        first_name: str = "Olga",
        wait_s: float = 10.0,
    ) -> SentMessage:
        """Send ``text`` as ``user`` and return the bot's answer in that chat."""
        chat_id = user if chat is None else chat
        before = len(self.telegram.messages_to(chat_id))
        self.telegram.send_message(
            text, user_id=user, chat_id=chat, language_code=language, first_name=first_name
        )
        await self.telegram.wait_for(
            lambda: len(self.telegram.messages_to(chat_id)) > before, timeout=wait_s
        )
        return self.telegram.messages_to(chat_id)[before]

    async def tap(
        self,
        message: SentMessage,
        data: str,
        *,
        user: int = OLGA,
        first_name: str = "Olga",
        check_button: bool = True,
        language: str | None = "en",
    ) -> dict[str, Any]:
        """Press a button of ``message``; returns the tap's answer once the bot is done."""
        answers = len(self.telegram.callback_answers)
        self.telegram.press_button(
            message.message_id,
            data,
            user_id=user,
            chat_id=message.chat_id,
            first_name=first_name,
            check_button=check_button,
            language_code=language,
        )
        await self.telegram.wait_for(lambda: len(self.telegram.callback_answers) > answers)
        await self.settle()
        return self.telegram.callback_answers[answers]

    def now(self, message: SentMessage) -> SentMessage:
        """A bot message as it is now: the latest text, and the keyboard it has now."""
        versions = [
            m
            for m in self.telegram.sent
            if m.chat_id == message.chat_id and m.message_id == message.message_id
        ]
        current = self.telegram.get_message(message.chat_id, message.message_id) or {}
        return dataclasses.replace(versions[-1], reply_markup=current.get("reply_markup"))

    def labels(self, message: SentMessage) -> list[str]:
        """The button labels a message shows now, row by row."""
        return [button["text"] for row in self.now(message).buttons for button in row]

    def messages_in(self, chat_id: int) -> list[int]:
        """The distinct messages the bot sent to a chat (edits are not new messages)."""
        return sorted({m.message_id for m in self.telegram.messages_to(chat_id)})

    async def settle(self) -> None:
        """Wait until the bot has handled every update it was given."""
        await self.telegram.wait_for(lambda: self.telegram.pending_updates == 0)
        await self.app.inbox.wait_idle(10.0)

    def rest_calls(self, method: str = "imopenlines.operator.transfer") -> list[dict[str, Any]]:
        """The parameters of every call of ``method`` that reached the portal, batched or not
        (numbers inside a batch arrive as text, as in a query string: made ints again)."""
        return [
            {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in call.params.items()}
            for call in self.portal.calls_to(method)
        ]

    def team_chat(self) -> list[str]:
        """What the team chat saw, as users see it (each send and each edit)."""
        return [m.plain_text for m in self.telegram.messages_to(TEAM_CHAT)]

    def team_chat_now(self) -> list[str]:
        """The team chat's messages as they read now, after edits."""
        latest: dict[int, str] = {}
        for m in self.telegram.messages_to(TEAM_CHAT):
            latest[m.message_id] = m.plain_text
        return [latest[k] for k in sorted(latest)]


@asynccontextmanager
async def running_bot(
    portal: PortalSimulator | None = None,
    env: dict[str, str] | None = None,
    yaml_text: str = CONFIG_YAML,
    extra_router: Router | None = None,
    limits: TelegramLimits | None = None,
    config_file: Path | None = None,
) -> AsyncIterator[Harness]:
    """Start the fakes and the real bot; stop everything on exit.

    ``extra_router`` is included after the bot's own (to plant a failing handler, say).
    """
    portal = portal or make_portal()
    fake = FakeTelegram(TOKEN, bot_username="handoff_test_bot", limits=limits)
    async with portal, fake as telegram:
        environment = fakes_env(portal, telegram, **(env or {}))
        if config_file is None:
            config = parse_config(yaml_text, environment)
        else:  # a real file, as /reload and SIGHUP read it again
            await asyncio.to_thread(config_file.write_text, yaml_text, encoding="utf-8")
            config = load_config(config_file, environment)
        app = build_app(config, path=config_file, env=environment)
        if extra_router is not None:
            app.dispatcher.include_router(extra_router)
        bot = build_bot(config, app.metrics)
        polling = asyncio.create_task(app.poll(bot, handle_signals=False, polling_timeout=1))
        harness = Harness(telegram, portal, config, app, bot)
        try:
            await telegram.wait_for(lambda: bool(telegram.calls_to("getUpdates")))
            yield harness
        finally:
            if not polling.done():
                await app.dispatcher.stop_polling()
            await polling
