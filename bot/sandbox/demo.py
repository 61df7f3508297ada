"""``python -m bot demo``: the real bot in a console, against an embedded portal and Bot API.

Nothing is faked inside the bot: the real dispatcher polls a Bot API server on 127.0.0.1 and
the real Bitrix24 client calls a portal simulator on 127.0.0.1. Each stdin line is sent as a
message from the first supervisor; replies and team-chat announcements are printed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from bot.app import build_app, build_bot
from bot.config import Config, ConfigError, Person, TelegramSettings, load_config
from bot.logs import setup_logging
from bot.sandbox.portal import PortalSimulator, SimDialog, SimOperator, SimQueue
from bot.sandbox.telegram import FakeTelegram, SentMessage

# Not a real token: the sandbox's Bot API server accepts only this one.
SANDBOX_TOKEN = "1000:sandbox-token-not-a-real-one"
SANDBOX_WEBHOOK_CODE = "sandbox0secret0code"


def sandbox_portal(config: Config) -> PortalSimulator:
    """A portal that knows the config's operators and queues, plus a few of its own."""
    operators = [SimOperator(op.bitrix_id, op.name) for op in config.operators]
    operators += [
        SimOperator(27, "Irina Volkova"),  # not in the directory: shows up as "user 27"
        SimOperator(28, "Pavel Orlov", active=False),  # on leave: transfers to him fail
    ]
    queues = [SimQueue(q.bitrix_id, q.name) for q in config.queues]
    line = config.queues[0].bitrix_id if config.queues else 1
    first = config.operators[0].bitrix_id if config.operators else 27
    second = config.operators[1].bitrix_id if len(config.operators) > 1 else 27
    dialogs = [
        SimDialog(
            2043, 3567, "Ivan Petrov — WhatsApp", owner=second, line_id=line, connector="whatsapp"
        ),
        SimDialog(2044, 3568, "Maria — Telegram", owner=first, line_id=line),
        SimDialog(
            2045, 3569, "Guest #17 — Live chat", owner=27, line_id=line, connector="livechat"
        ),
        SimDialog(2046, 3570, "Oleg <VIP> — VK", owner=0, line_id=line, connector="vkgroup"),
    ]
    return PortalSimulator(
        operators=operators,
        queues=queues,
        dialogs=dialogs,
        webhook_user_id=1,
        webhook_code=SANDBOX_WEBHOOK_CODE,
        leak_per_s=config.bitrix24.rate_per_s,
        burst=config.bitrix24.burst,
    )


class Console:
    """Prints what the bot sent, the supervisor's chat first, then announcements."""

    def __init__(self, supervisor: Person, team_chat: int | None) -> None:
        self.supervisor = supervisor
        self.team_chat = team_chat
        self.shown = 0

    def flush(self, sent: list[SentMessage]) -> None:
        """Print the messages not printed yet."""
        new, self.shown = sent[self.shown :], len(sent)
        mine = [m for m in new if m.chat_id == self.supervisor.id]
        for message in mine + [m for m in new if m.chat_id != self.supervisor.id]:
            if message.chat_id == self.supervisor.id:
                label = "bot:"
            elif message.chat_id == self.team_chat:
                label = "[team chat]"
            else:
                label = f"[chat {message.chat_id}]"
            lines = (message.plain_text or message.text).splitlines() or [""]
            print(f"{label} {lines[0]}")
            for more in lines[1:]:
                print(f"{' ' * len(label)} {more}")
        sys.stdout.flush()


def _sandboxed(config: Config, webhook_url: str, api_url: str) -> Config:
    return config.model_copy(
        update={
            "telegram": TelegramSettings(token=SecretStr(SANDBOX_TOKEN), api_url=api_url),
            "bitrix24": config.bitrix24.model_copy(update={"webhook_url": SecretStr(webhook_url)}),
        }
    )


def _console_language() -> str:
    locale = os.environ.get("LC_ALL") or os.environ.get("LANG") or "en"
    return locale[:2].lower()


def _answered(telegram: FakeTelegram, chat_id: int, before: int) -> Callable[[], bool]:
    return lambda: len(telegram.messages_to(chat_id)) > before


async def run_demo(path: Path, log_level: str = "WARNING") -> int:
    """Run the sandbox until end of input; 0 when it ran, 2 when the config is unusable."""
    try:
        config = load_config(path, env={})  # the sandbox supplies its own token and portal
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if not config.supervisors:
        print(f"{path}: the demo needs at least one entry under supervisors:", file=sys.stderr)
        return 2
    setup_logging("WARNING" if log_level == "INFO" else log_level, [SANDBOX_WEBHOOK_CODE])
    supervisor = config.supervisors[0]
    interactive = sys.stdin.isatty()

    async with sandbox_portal(config) as portal, FakeTelegram(SANDBOX_TOKEN) as telegram:
        config = _sandboxed(config, portal.url, telegram.base_url)
        app = build_app(config)
        bot = build_bot(config)
        polling = asyncio.create_task(
            app.dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1)
        )
        console = Console(supervisor, config.announce_to)
        print(
            f"Sandbox: you are {supervisor.name}, a supervisor. Dialogs 2043-2046 exist; "
            "try /transfer 2043 @anna, /help, /operators."
        )
        if interactive:
            print("Type commands; Ctrl-D quits.")
        loop = asyncio.get_running_loop()
        reply_wait = config.bitrix24.deadline_s * 2 + 5
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                text = line.strip()
                if not text:
                    continue
                if not interactive:
                    print(f"> {text}")
                before = len(telegram.messages_to(supervisor.id))
                telegram.send_message(
                    text,
                    user_id=supervisor.id,
                    first_name=supervisor.name,
                    language_code=_console_language(),
                )
                try:
                    await telegram.wait_for(_answered(telegram, supervisor.id, before), reply_wait)
                except TimeoutError:
                    print("(no reply)")
                console.flush(telegram.sent)
        finally:
            await app.dispatcher.stop_polling()
            await polling
    return 0
