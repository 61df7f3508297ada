"""``python -m bot demo``: the real bot in a console, against an embedded portal and Bot API.

Nothing is faked inside the bot: the real dispatcher polls a Bot API server on 127.0.0.1 and
the real Bitrix24 client calls a portal simulator on 127.0.0.1. Each stdin line is sent as a
message from the first supervisor; replies and team-chat announcements are printed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from bot.app import build_app, build_bot
from bot.config import (
    Config,
    ConfigError,
    Person,
    StorageSettings,
    TelegramSettings,
    load_config,
)
from bot.logs import setup_logging
from bot.sandbox.portal import PortalSimulator, SimDialog, SimOperator, SimQueue
from bot.sandbox.telegram import FakeTelegram, SentMessage

# Not a real token: the sandbox's Bot API server accepts only this one.
SANDBOX_TOKEN = "1000:sandbox-token-not-a-real-one"
SANDBOX_WEBHOOK_CODE = "sandbox0secret0code"


# Users of the sample directory that are not ordinary staff on the sandbox's portal: the
# portal drops transfers to them without a word, and the bot shows how that reads.
_KINDS = {29: "extranet"}


def sandbox_portal(config: Config) -> PortalSimulator:
    """A portal that knows the config's operators and queues, plus a few of its own."""
    # signed out of Bitrix24 (the buttons mark them ⚪, a transfer typed to one asks first):
    # Bob, who holds dialog 2043, the night's reason to move it
    offline = {16}
    operators = [
        SimOperator(
            op.bitrix_id,
            op.name,
            kind=_KINDS.get(op.bitrix_id, "employee"),
            online=op.bitrix_id not in offline,
        )
        for op in config.operators
    ]
    operators += [
        SimOperator(27, "Irina Volkova"),  # not in the directory: shows up as "user 27"
        SimOperator(28, "Pavel Orlov", active=False),  # on leave: transfers to him do nothing
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
    """The supervisor's side of the chat, in a terminal.

    Prints what the bot sent or edited (the supervisor's chat first, then the team chat),
    numbers the buttons of the newest keyboard so that typing ``2`` presses the second, and
    sends a line starting with ``^`` as a reply to the bot's last message.
    """

    def __init__(self, telegram: FakeTelegram, supervisor: Person, team_chat: int | None) -> None:
        self.telegram = telegram
        self.supervisor = supervisor
        self.team_chat = team_chat
        self.shown = 0
        self.answers_shown = 0
        self.keyboard: SentMessage | None = None  # the message whose buttons are numbered

    def send(self, line: str, language: str) -> None:
        """Hand one typed line to the bot: a button press, a reply, or a message."""
        me = self.supervisor
        if line.isdigit() and self.keyboard is not None:
            data = self._buttons(self.keyboard, "callback_data")
            number = int(line)
            if 1 <= number <= len(data):
                self.telegram.press_button(
                    self.keyboard.message_id,
                    data[number - 1],
                    user_id=me.id,
                    chat_id=self.keyboard.chat_id,
                    first_name=me.name,
                    language_code=language,
                    check_button=False,
                )
                return
        reply_to = None
        if line.startswith("^"):
            line = line[1:].strip()
            mine = self.telegram.messages_to(me.id)
            reply_to = mine[-1].message_id if mine else None
        self.telegram.send_message(
            line,
            user_id=me.id,
            first_name=me.name,
            language_code=language,
            reply_to_message_id=reply_to,
        )

    def flush(self) -> None:
        """Print what the bot did since the last flush."""
        for answer in self.telegram.callback_answers[self.answers_shown :]:
            if answer.get("text"):  # what the phone shows over the chat for a moment
                print(f"({answer['text']})")
        self.answers_shown = len(self.telegram.callback_answers)
        sent = self.telegram.sent
        new, self.shown = sent[self.shown :], len(sent)
        mine = [m for m in new if m.chat_id == self.supervisor.id]
        for message in mine + [m for m in new if m.chat_id != self.supervisor.id]:
            self._print(message)
        sys.stdout.flush()

    def _print(self, message: SentMessage) -> None:
        if message.chat_id == self.supervisor.id:
            label = "bot:"
        elif message.chat_id == self.team_chat:
            label = "[team chat]"
        else:
            label = f"[chat {message.chat_id}]"
        if message.method == "editMessageText":
            label = label.rstrip(":") + " (edited):"
        lines = (message.plain_text or message.text).splitlines() or [""]
        buttons = self._buttons(message, "text")
        if buttons:
            self.keyboard = message
            lines.append("  ".join(f"[{n}] {text}" for n, text in enumerate(buttons, 1)))
        print(f"{label} {lines[0]}")
        for more in lines[1:]:
            print(f"{' ' * len(label)} {more}")

    def _buttons(self, message: SentMessage, field: str) -> list[str]:
        """A field of every button the message shows now (edits may have removed them)."""
        current = self.telegram.get_message(message.chat_id, message.message_id) or {}
        rows = (current.get("reply_markup") or {}).get("inline_keyboard") or []
        return [str(button.get(field, "")) for row in rows for button in row]


def _sandboxed(config: Config, webhook_url: str, api_url: str) -> Config:
    return config.model_copy(
        update={
            "telegram": TelegramSettings(token=SecretStr(SANDBOX_TOKEN), api_url=api_url),
            "bitrix24": config.bitrix24.model_copy(update={"webhook_url": SecretStr(webhook_url)}),
            "storage": StorageSettings(path=":memory:"),  # the sandbox leaves no files behind
        }
    )


def _console_language() -> str:
    locale = os.environ.get("LC_ALL") or os.environ.get("LANG") or "en"
    return locale[:2].lower()


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
        bot = build_bot(config, app.metrics)
        polling = asyncio.create_task(app.poll(bot, handle_signals=False, polling_timeout=1))
        console = Console(telegram, supervisor, config.announce_to)
        print(
            f"Sandbox: you are {supervisor.name}, a supervisor. Dialogs 2043-2046 exist; "
            "try /transfer 2043 @anna, /help, /operators."
        )
        if interactive:
            print("Type commands; a number presses that button; ^ replies; Ctrl-D quits.")
        loop = asyncio.get_running_loop()
        settle_s = config.bitrix24.deadline_s * 2 + 5
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
                console.send(text, _console_language())
                try:
                    await telegram.wait_for(lambda: telegram.pending_updates == 0, settle_s)
                except TimeoutError:
                    print("(the bot did not take the message)")
                await app.inbox.wait_idle(settle_s)
                console.flush()
        finally:
            await app.dispatcher.stop_polling()
            await polling
    return 0
