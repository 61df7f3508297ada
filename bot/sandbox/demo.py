"""``python -m bot demo``: the real bot in a console, against an embedded portal and Bot API.

Nothing is faked inside the bot: the real dispatcher polls a Bot API server on 127.0.0.1 and
the real Bitrix24 client calls a portal simulator on 127.0.0.1. Each stdin line is sent as a
message from the first supervisor; replies and team-chat announcements are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from bot.app import App, build_app, build_bot
from bot.config import (
    ENV_CONFIG,
    Config,
    ConfigError,
    Person,
    StorageSettings,
    TelegramSettings,
    config_path,
    load_config,
)
from bot.logs import setup_logging
from bot.sandbox import STOPPED
from bot.sandbox.portal import PortalSimulator, SimDialog, SimOperator, SimQueue
from bot.sandbox.telegram import ApiCall, FakeTelegram

# Not a real token: the sandbox's Bot API server accepts only this one.
SANDBOX_TOKEN = "1000:sandbox-token-not-a-real-one"
SANDBOX_WEBHOOK_CODE = "sandbox0secret0code"
SANDBOX_USERNAME = "handoff_sandbox_bot"
# The sample config ships inside the package (the repository's config.yaml points here), so
# the sandbox runs from any folder.
SAMPLE_CONFIG = Path(__file__).with_name("config.yaml")


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


# What the console shows of the bot's calls: messages sent, and edits of their text or buttons
# (turning a page of the picker changes only the buttons).
_SHOWN_CALLS = frozenset({"sendmessage", "editmessagetext", "editmessagereplymarkup"})


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
        self.answers_shown = 0
        self.keyboard: tuple[int, int] | None = None  # (chat, message) whose buttons are numbered
        self._seen: list[tuple[str, dict[str, object]]] = []  # (method, message) not yet shown
        telegram.on_call = self._saw

    def _saw(self, call: ApiCall) -> None:
        result = (call.response or {}).get("result")
        if call.ok and call.method.lower() in _SHOWN_CALLS and isinstance(result, dict):
            self._seen.append((call.method.lower(), result))

    def send(self, line: str, language: str) -> None:
        """Hand one typed line to the bot: a button press, a reply, or a message."""
        me = self.supervisor
        if line.isdigit() and self.keyboard is not None:
            chat_id, message_id = self.keyboard
            data = self._buttons(chat_id, message_id, "callback_data")
            number = int(line)
            if 1 <= number <= len(data):
                self.telegram.press_button(
                    message_id,
                    data[number - 1],
                    user_id=me.id,
                    chat_id=chat_id,
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
        new, self._seen = self._seen, []
        me = self.supervisor.id
        mine = [seen for seen in new if self._chat(seen[1]) == me]
        for method, message in mine + [seen for seen in new if self._chat(seen[1]) != me]:
            self._print(method, message)
        sys.stdout.flush()

    @staticmethod
    def _chat(message: dict[str, object]) -> int:
        chat = message.get("chat")
        return int(str(chat.get("id"))) if isinstance(chat, dict) else 0

    def _print(self, method: str, message: dict[str, object]) -> None:
        chat_id, message_id = self._chat(message), int(str(message.get("message_id")))
        if chat_id == self.supervisor.id:
            label = "bot:"
        elif chat_id == self.team_chat:
            label = "[team chat]"
        else:
            label = f"[chat {chat_id}]"
        if method != "sendmessage":
            label = label.rstrip(":") + " (edited):"
        lines = str(message.get("text", "")).splitlines() or [""]
        buttons = self._buttons(chat_id, message_id, "text")
        if buttons:
            self.keyboard = (chat_id, message_id)
            lines.append("  ".join(f"[{n}] {text}" for n, text in enumerate(buttons, 1)))
        print(f"{label} {lines[0]}")
        for more in lines[1:]:
            print(f"{' ' * len(label)} {more}")

    def _buttons(self, chat_id: int, message_id: int, field: str) -> list[str]:
        """A field of every button the message shows now (edits may have removed them)."""
        current = self.telegram.get_message(chat_id, message_id) or {}
        rows = (current.get("reply_markup") or {}).get("inline_keyboard") or []
        return [str(button.get(field, "")) for row in rows for button in row]


class TypedLines:
    """The lines of stdin as they come, read by the event loop itself, not by a thread that
    would keep the process alive after Ctrl-C until Enter is pressed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._buffer = b""
        self._loop = asyncio.get_running_loop()
        self._fd = stream.fileno()
        try:
            self._loop.add_reader(self._fd, self._readable)
            self._watching = self._watched = True
        except (OSError, NotImplementedError, ValueError):
            # a regular file (`< commands.txt`) cannot be watched, and never blocks a read
            self._watching = self._watched = False

    def _readable(self) -> None:
        data = os.read(self._fd, 65536)
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._queue.put_nowait(line.decode("utf-8", errors="replace"))
        if not data:
            if self._buffer:
                self._queue.put_nowait(self._buffer.decode("utf-8", errors="replace"))
            self.close()

    async def next(self) -> str | None:
        """The next line without its line end; None at end of input."""
        if not self._watched:
            line = self._stream.readline()
            return line.rstrip("\n") if line else None
        return await self._queue.get()

    def close(self) -> None:
        """Stop watching stdin: what was read is still given out, then end of input."""
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False
            self._queue.put_nowait(None)


def _sandboxed(config: Config, webhook_url: str, api_url: str) -> Config:
    return config.model_copy(
        update={
            "telegram": TelegramSettings(token=SecretStr(SANDBOX_TOKEN), api_url=api_url),
            "bitrix24": config.bitrix24.model_copy(update={"webhook_url": SecretStr(webhook_url)}),
            "storage": StorageSettings(path=":memory:"),  # the sandbox leaves no files behind
            "shutdown_grace_s": 1.0,  # Ctrl-C: nothing to keep, so no reason to wait
        }
    )


def demo_config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config`` wins, then ``BOT_CONFIG``, then ``./config.yaml`` if there is one, else the
    sample config that ships with the bot."""
    environ = os.environ if env is None else env
    if cli_value or environ.get(ENV_CONFIG):
        return config_path(cli_value, environ)
    here = Path("config.yaml")
    return here if here.exists() else SAMPLE_CONFIG


def console_language(env: Mapping[str, str] | None = None) -> str:
    """The supervisor's Telegram language from the locale (``LC_ALL``, ``LC_MESSAGES``,
    ``LANG``): ``ru_RU.UTF-8`` is ``ru``; no locale, or ``C``, is ``en``."""
    environ = os.environ if env is None else env
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        locale = environ.get(name, "")
        if locale:
            code = locale[:2].lower()
            return code if len(code) == 2 and code.isalpha() else "en"
    return "en"


def _which(path: Path) -> str:
    if path.resolve() == SAMPLE_CONFIG.resolve():
        return f"the sample that ships with the bot ({path})"
    return str(path)


class CtrlC:
    """Ctrl-C: one line, then stop what the sandbox is doing (starting, or talking), never
    its cleanup; pressed again, it changes nothing (the sandbox is on its way out)."""

    def __init__(self) -> None:
        self.pressed = False
        self.stops: asyncio.Task[object] | None = asyncio.current_task()

    def __call__(self) -> None:
        if self.pressed:
            return
        self.pressed = True
        if sys.stdin.isatty():
            print(flush=True)  # end the prompt's line, after the terminal's "^C"
        print(STOPPED, file=sys.stderr, flush=True)
        if self.stops is not None:
            self.stops.cancel()


async def run_demo(path: Path, log_level: str = "WARNING", language: str | None = None) -> int:
    """Run the sandbox until end of input or Ctrl-C; 0 when it ran, 2 when the config is
    unusable. ``language``: the supervisor's Telegram language (default: the locale's)."""
    loop = asyncio.get_running_loop()
    ctrl_c = CtrlC()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off Unix
        loop.add_signal_handler(signal.SIGINT, ctrl_c)
    try:
        return await _session(path, log_level, language or console_language(), ctrl_c)
    except asyncio.CancelledError:
        if not ctrl_c.pressed:
            raise
        return 0
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


async def _session(path: Path, log_level: str, language: str, ctrl_c: CtrlC) -> int:
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

    async with (
        sandbox_portal(config) as portal,
        FakeTelegram(SANDBOX_TOKEN, bot_username=SANDBOX_USERNAME) as telegram,
    ):

        def prepare(read: Config) -> Config:
            return _sandboxed(read, portal.url, telegram.base_url)

        config = prepare(config)
        app = build_app(config, path=path, env={}, prepare=prepare)
        bot = build_bot(config, app.metrics)
        try:
            bot_user = await bot.me()  # getMe, through the sandbox's Bot API server
        except BaseException:
            await bot.session.close()
            await app.close()
            raise
        polling = asyncio.create_task(app.poll(bot, handle_signals=False, polling_timeout=1))
        print(
            f"Sandbox: the bot is @{bot_user.username}; you are {supervisor.name}, "
            f"a supervisor, in Telegram language «{language}»."
        )
        print(f"Config: {_which(path)}; /reload reads it again.")
        print("Dialogs 2043-2046 exist; try /transfer 2043 @anna, /help, /operators.")
        console = Console(telegram, supervisor, config.announce_to)
        talk = asyncio.create_task(_talk(console, app, telegram, language))
        ctrl_c.stops = talk
        try:
            await asyncio.wait([talk])
        finally:
            ctrl_c.stops = None
            if not talk.done():  # run_demo itself was cancelled
                talk.cancel()
                await asyncio.wait([talk])
            await app.dispatcher.stop_polling()
            await polling
        if not talk.cancelled():
            talk.result()  # a failure of the console itself: let it be seen
    return 0


async def _talk(console: Console, app: App, telegram: FakeTelegram, language: str) -> None:
    """Read lines, hand them to the bot, print what it did; until end of input."""
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type commands; a number presses that button; ^ replies; Ctrl-D or Ctrl-C quits.")
    settle_s = app.config.bitrix24.deadline_s * 2 + 5
    lines = TypedLines(sys.stdin)
    try:
        while True:
            if interactive:
                print("> ", end="", flush=True)
            else:
                sys.stdout.flush()
            line = await lines.next()
            if line is None:
                if interactive:
                    print()  # Ctrl-D: the shell's prompt on a line of its own
                return
            text = line.strip()
            if not text:
                continue
            if not interactive:
                print(f"> {text}")
            console.send(text, language)
            try:
                await telegram.wait_for(lambda: telegram.pending_updates == 0, settle_s)
            except TimeoutError:
                print("(the bot did not take the message)")
            await app.inbox.wait_idle(settle_s)
            console.flush()
    finally:
        lines.close()
