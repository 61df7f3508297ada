"""Nasty messages end to end: every one gets exactly one clear answer and moves nothing.

The real bot polls the fake Bot API and calls the portal simulator (tests/harness.py). For each
message: one reply (not silence, not several pieces), no "Something went wrong inside the bot",
no traceback text, no message the Bot API refused, no error logged, and no transfer REST call
unless the command is a valid one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from bot.sandbox.telegram import SentMessage
from tests.conftest import ANNA
from tests.harness import CONFIG_YAML, Harness, running_bot

LENGTH = 4000  # a long message, still under Telegram's 4096 for what a user may send

USAGE_TAIL = ["Usage: /transfer <dialog> <who>", "Example: /transfer 2043 @anna"]
NOT_A_NAME = "» is not a name (use @name, #queue, user:15 or queue:3)."
NOT_A_DIALOG = "» is not a dialog number."
TOO_MANY = "Too many dialogs in one command: 20 at most."
EMPTY = "Which dialog, and to whom?"
NOT_UNDERSTOOD = "I only understand commands. See /help."
UNDERSTOOD = "2043 → ?: "  # what a reply about a bad name shows it understood
NO_SUCH_COMMAND = "There is no /"
COMMANDS = "Commands: /transfer /finish /history /operators /queues /help"
FORBIDDEN = ("Something went wrong inside the bot", "Traceback", 'File "', "Error:")
TRANSFER = "imopenlines.operator.transfer"

# one event loop for the module, so that one running bot can serve the whole corpus
pytestmark = pytest.mark.asyncio(loop_scope="module")

# The bot paces what it posts to one chat (about one message a second, as Telegram asks), so
# the shared bot hears each message from a supervisor of its own, in a chat of its own: every
# message is answered at once, and what lands in that chat is that message's answer only.
SUPERVISORS = range(700_000_001, 700_000_301)
GROUPS = range(-1_003_000_000_001, -1_003_000_000_101, -1)
_users = iter(SUPERVISORS)
_groups = iter(GROUPS)
MANY_SUPERVISORS_YAML = CONFIG_YAML.replace(
    "supervisors:\n",
    "supervisors:\n" + "".join(f"  - {{id: {u}, name: Tester}}\n" for u in SUPERVISORS),
    1,
).replace(
    "chats:\n",
    "chats:\n" + "".join(f"  - {{id: {g}, name: Test group}}\n" for g in GROUPS),
    1,
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared() -> AsyncIterator[Harness]:
    """One bot for every message that moves nothing (each check looks only at what is new)."""
    async with running_bot(yaml_text=MANY_SUPERVISORS_YAML) as h:
        yield h


@dataclass
class Exchange:
    """One message to the bot and everything that came of it."""

    reply: SentMessage
    sent: list[SentMessage]  # every new message the bot sent to that chat
    refused: list[str]  # what the Bot API refused, if anything
    errors: list[str]  # ERROR records the bot logged
    portal_calls: list[str]  # the portal methods called meanwhile
    transfers: list[dict[str, object]]  # the transfer calls among them


async def send(
    h: Harness, text: str, caplog: pytest.LogCaptureFixture, *, group: bool = False
) -> Exchange:
    """Say ``text`` as a fresh supervisor, privately or in a fresh listed group, and wait
    until the bot is done with it."""
    user = next(_users)
    chat = next(_groups) if group else None
    chat_id = user if chat is None else chat
    before = len(h.telegram.messages_to(chat_id))
    calls = len(h.telegram.calls)
    portal_before = len(h.portal.calls)
    transfers_before = len(h.rest_calls())
    with caplog.at_level(logging.ERROR):
        reply = await h.say(text, user=user, chat=chat, first_name="Tester", wait_s=5.0)
        await h.settle()
    sent = [m for m in h.telegram.messages_to(chat_id)[before:] if m.method == "sendMessage"]
    refused = [
        str((call.response or {}).get("description"))
        for call in h.telegram.calls[calls:]
        if call.status is not None and not call.ok and call.method.lower() != "getupdates"
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    portal_calls = [call.method for call in h.portal.calls[portal_before:]]
    transfers = h.rest_calls()[transfers_before:]
    return Exchange(reply, sent, refused, errors, portal_calls, transfers)


def check_one_clear_reply(x: Exchange) -> None:
    """The common promise: one message, delivered, with no sign of a crash."""
    assert x.refused == [], f"the Bot API refused a reply: {x.refused}"
    assert x.errors == [], f"the bot logged errors: {x.errors}"
    assert len(x.sent) == 1, f"{len(x.sent)} messages for one command: " + repr(
        [m.plain_text[:80] for m in x.sent]
    )
    for bad in FORBIDDEN:
        assert bad not in x.reply.plain_text
    assert x.reply.plain_text.strip()


def check_no_link(x: Exchange) -> None:
    """Nothing the user typed becomes markup: no link, no bold, no tag of theirs."""
    for message in x.sent:
        kinds = {entity["type"] for entity in message.entities}
        assert not kinds & {"text_link", "url", "bold", "italic", "pre", "text_mention"}, kinds
        assert "<a" not in message.text
        assert "</a>" not in message.text
        assert "<b>" not in message.text


def long_message(prefix: str, fill: str, suffix: str = "") -> str:
    """``prefix`` + ``fill`` repeated + ``suffix``, exactly :data:`LENGTH` characters."""
    body = (fill * LENGTH)[: LENGTH - len(prefix) - len(suffix)]
    return prefix + body + suffix


def numbers_up_to(length: int, start: int = 1000) -> str:
    """Distinct dialog numbers, space-separated, about ``length`` characters."""
    words: list[str] = []
    n = start
    while sum(len(w) + 1 for w in words) + len(str(n)) < length:
        words.append(str(n))
        n += 1
    return " ".join(words)


# ---- the corpus ---------------------------------------------------------------------------------
# (id, message, the first line the reply must start with, what it must end with)

HUNDRED = " ".join(str(n) for n in range(1000, 1100))

REFUSED: list[tuple[str, str, str, str]] = [
    # 4,000 characters
    (
        "long-bad-target",
        long_message("/transfer 2043 ", "x", "!"),
        f"{UNDERSTOOD}«xxxxxxxx",
        NOT_A_NAME,
    ),
    (
        "long-angle-brackets",
        long_message("/transfer 2043 ", "<"),
        f"{UNDERSTOOD}«<<<<<<<<",
        NOT_A_NAME,
    ),
    (
        "long-ampersands",
        long_message("/transfer 2043 ", "&", "x"),
        f"{UNDERSTOOD}«&&&&&&&&",
        NOT_A_NAME,
    ),
    (
        "long-unknown-name",
        long_message("/transfer 2043 @", "a"),
        "I don't know «@aaaaaaaa",
        "». See /operators and /queues.",
    ),
    (
        "long-dialog-list",
        "/transfer " + numbers_up_to(LENGTH - len("/transfer  @anna")) + " @anna",
        TOO_MANY,
        TOO_MANY,
    ),
    ("long-no-command", long_message("", "blah "), NOT_UNDERSTOOD, NOT_UNDERSTOOD),
    # unicode, right-to-left, invisible and combining characters
    ("arabic-name", "/transfer 2043 @آنا", "I don't know «@آنا»", "See /operators and /queues."),
    ("hebrew-name", "/transfer 2043 @אנה", "I don't know «@אנה»", "See /operators and /queues."),
    ("cyrillic-name", "/transfer 2043 @Ёлкин", "I don't know «@Ёлкин»", "/queues."),
    ("arabic-digits", "/transfer ٢٠٤٣ @anna", "«٢٠٤٣", NOT_A_DIALOG),
    ("emoji-name", "/transfer 2043 @😀", f"{UNDERSTOOD}«@😀", NOT_A_NAME),
    ("emoji-zwj-name", "/transfer 2043 @👩\u200d💻", f"{UNDERSTOOD}«@👩💻", NOT_A_NAME),
    ("emoji-after-name", "/transfer 2043 @anna🙂", f"{UNDERSTOOD}«@anna🙂", NOT_A_NAME),
    ("combining-in-name", "/transfer 2043 @bob\u0301\u0301", f"{UNDERSTOOD}«@bob", NOT_A_NAME),
    ("combining-in-number", "/transfer 2043\u0301 @anna", "«2043\u0301", NOT_A_DIALOG),
    # too many dialogs
    ("hundred-dialogs-and-target", f"/transfer {HUNDRED} @anna", TOO_MANY, TOO_MANY),
    ("hundred-dialogs", f"/transfer {HUNDRED}", TOO_MANY, TOO_MANY),
    (
        "hundred-dialogs-commas",
        f"/transfer {HUNDRED.replace(' ', ',')} #support",
        TOO_MANY,
        TOO_MANY,
    ),
    # only whitespace after the command
    ("spaces", "/transfer     ", EMPTY, EMPTY),
    ("newlines", "/transfer\n\n\n", EMPTY, EMPTY),
    ("mixed-blanks", "/transfer \t\n \u00a0\u2003\n", EMPTY, EMPTY),
    ("separators-only", "/transfer , ; ,,", EMPTY, EMPTY),
    # control characters
    ("nul", "/transfer \x00", "«\x00", NOT_A_NAME),
    ("nul-in-target", "/transfer 2043 @an\x00na", f"{UNDERSTOOD}«@an\x00na", NOT_A_NAME),
    ("nul-in-number", "/transfer 20\x0043 @anna", "«20\x0043", NOT_A_DIALOG),
    ("bell", "/transfer 2043 \x07", f"{UNDERSTOOD}«\x07", NOT_A_NAME),
    ("escape-sequence", "/transfer \x1b[31m2043 @anna", "«\x1b[31m2043", NOT_A_DIALOG),
    (
        "backspaces",
        "/transfer 2043 @anna\x08\x08\x08\x08bob",
        f"{UNDERSTOOD}«@anna\x08",
        NOT_A_NAME,
    ),
    ("del", "/transfer 2043 \x7f", f"{UNDERSTOOD}«\x7f", NOT_A_NAME),
    (
        "nul-glued-to-command",
        "/transfer\x00 2043 @anna",
        "There is no /transfer\x00 command.",
        "Did you mean /transfer?",
    ),
    # commands the bot does not have
    ("unknown-command", "/foo", "There is no /foo command.", "There is no /foo command."),
    ("unknown-command-args", "/foo 2043 @anna", "There is no /foo command.", "command."),
    ("unknown-command-mention", "/foo@handoff_test_bot", "There is no /foo command.", "."),
    ("misspelt-command", "/trasnfer 2043 @anna", NO_SUCH_COMMAND, "Did you mean /transfer?"),
    ("slash-space", "/ transfer 2043 @anna", NOT_UNDERSTOOD, NOT_UNDERSTOOD),
    ("lone-slash", "/", NOT_UNDERSTOOD, NOT_UNDERSTOOD),
]


@pytest.mark.parametrize(
    ("text", "starts", "ends"),
    [pytest.param(text, starts, ends, id=name) for name, text, starts, ends in REFUSED],
)
async def test_bad_input_gets_one_clear_reply_and_moves_nothing(
    shared: Harness, text: str, starts: str, ends: str, caplog: pytest.LogCaptureFixture
) -> None:
    x = await send(shared, text, caplog)
    check_one_clear_reply(x)
    check_no_link(x)
    lines = x.reply.plain_text.splitlines()
    assert lines[0].startswith(starts), lines[0][:200]
    assert lines[0].endswith(ends), lines[0][-200:]
    if starts.startswith(("«", UNDERSTOOD)) or starts in (TOO_MANY, EMPTY):
        assert lines[1:] == USAGE_TAIL
    if starts.startswith(NO_SUCH_COMMAND):
        assert lines[1:] == [COMMANDS]
    assert x.transfers == []


# ---- markup in what the user typed is shown, never rendered --------------------------------------

# (id, message, the word the reply must quote literally, what it says about it)
INJECTIONS: list[tuple[str, str, str, str]] = [
    ("bold-target", "/transfer 2043 <b>x</b>", "<b>x</b>", NOT_A_NAME),
    ("bold-dialog", "/transfer <b>x</b> @anna", "<b>x</b>", NOT_A_DIALOG),
    ("link-target", '/transfer 2043 <a href="http://evil">x</a>', "<a", NOT_A_NAME),
    (
        "link-target-no-spaces",
        '/transfer 2043 <a_href="http://evil">x</a>',
        '<a_href="http://evil">x</a>',
        NOT_A_NAME,
    ),
    (
        "link-dialog",
        '/transfer <a_href="http://evil">x</a> @anna',
        '<a_href="http://evil">x</a>',
        NOT_A_DIALOG,
    ),
    ("markdown-bold-target", "/transfer 2043 *bold*", "*bold*", NOT_A_NAME),
    ("markdown-bold-dialog", "/transfer *2043* @anna", "*2043*", NOT_A_DIALOG),
    ("markdown-code-target", "/transfer 2043 `code`", "`code`", NOT_A_NAME),
    ("markdown-pre-target", "/transfer 2043 ```x```", "```x```", NOT_A_NAME),
    ("markdown-link-target", "/transfer 2043 [x](http://evil)", "[x](http://evil)", NOT_A_NAME),
    ("markdown-link-dialog", "/transfer [x](http://evil) @anna", "[x](http://evil)", NOT_A_DIALOG),
    ("markdownv2-escapes", "/transfer 2043 \\*x\\_y\\_", "\\*x\\_y\\_", NOT_A_NAME),
    ("html-entity", "/transfer 2043 &lt;b&gt;", "&lt", NOT_A_NAME),
    ("html-comment", "/transfer 2043 <!--x-->", "<!--x-->", NOT_A_NAME),
    (
        "tg-spoiler",
        "/transfer 2043 <tg-spoiler>x</tg-spoiler>",
        "<tg-spoiler>x</tg-spoiler>",
        NOT_A_NAME,
    ),
    (
        "tg-user-link",
        "/transfer 2043 <a_href='tg://user?id=1'>",
        "<a_href='tg://user?id=1'>",
        NOT_A_NAME,
    ),
    ("script", "/transfer 2043 <script>alert(1)</script>", "<script>alert(1)</script>", NOT_A_NAME),
]


@pytest.mark.parametrize("group", [False, True], ids=["private", "group"])
@pytest.mark.parametrize(
    ("text", "quoted", "ends"),
    [pytest.param(text, quoted, ends, id=name) for name, text, quoted, ends in INJECTIONS],
)
async def test_markup_in_a_command_is_quoted_literally(
    shared: Harness,
    text: str,
    quoted: str,
    ends: str,
    group: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    x = await send(shared, text, caplog, group=group)
    check_one_clear_reply(x)
    check_no_link(x)
    first, *rest = x.reply.plain_text.splitlines()
    understood = UNDERSTOOD if ends == NOT_A_NAME else ""
    assert first == f"{understood}«{quoted}{ends}"
    assert rest == USAGE_TAIL
    # what was sent is escaped HTML: the user's tags arrive as text, not as tags
    assert quoted not in x.reply.text or "<" not in quoted
    if group:
        assert x.reply.reply_to_message_id is not None, "in a group, the answer is a reply"
    assert x.portal_calls == []


async def test_markup_in_a_directory_name_is_quoted_in_the_suggestion(
    shared: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # "Sales <line>" is a real queue name with markup in it: "did you mean" shows it as text
    x = await send(shared, "/transfer 2043 #sale", caplog)
    check_one_clear_reply(x)
    check_no_link(x)
    assert x.reply.plain_text == "I don't know «#sale». Did you mean #sales (Sales <line>)?"
    assert "Sales &lt;line&gt;" in x.reply.text
    assert x.portal_calls == []


# ---- odd but valid: exactly one transfer goes out ------------------------------------------------

VALID = [
    ("commas", "/transfer 2043,@anna"),
    ("semicolons", "/transfer 2043;@anna;"),
    ("newlines", "/transfer\n2043\n@anna\n"),
    ("no-break-spaces", "/transfer\u00a02043\u00a0@anna"),
    ("ideographic-space", "/transfer 2043\u3000@anna"),
    ("tabs", "/transfer\t2043\t\t@anna"),
    ("line-separator", "/transfer 2043\u2028@anna"),
    ("wrapped-number", "/transfer (2043). @anna"),
    ("upper-case", "/transfer CHAT2043 @ANNA"),
    ("link", "/transfer https://x.bitrix24.ru/online/?IM_DIALOG=chat2043 @anna"),
    (
        "encoded-session-link",
        "/transfer https://x.bitrix24.ru/online/?IM_HISTORY=imol%7C3567 @anna",
    ),
    ("the-same-dialog-many-times", "/transfer 2043 #2043 chat2043 s3567 №3567 @anna"),
    ("bot-mention", "/transfer@handoff_test_bot 2043 @anna"),
    ("cyrillic-name", "/transfer 2043 @Анна"),
    ("cyrillic-full-name", "/transfer 2043 Анна Смирнова"),
    ("combining-in-name", "/transfer 2043 @anna\u0301"),  # "anná": accents fold away
    ("upper-case-command", "/TRANSFER 2043 @anna"),
    ("mixed-case-mention", "/Transfer@Handoff_Test_Bot 2043 @anna"),
    # invisible characters pasted into a word are dropped
    ("rtl-override", "/transfer 2043 \u202e@anna"),
    # invisible characters pasted into a word are dropped
    ("zwsp-in-name", "/transfer 2043 @an\u200bna"),
    # invisible characters pasted into a word are dropped
    ("zwj-in-name", "/transfer 2043 @an\u200dna"),
    # invisible characters pasted into a word are dropped
    ("bom-before-name", "/transfer 2043 \ufeff@anna"),
    # invisible characters pasted into a word are dropped
    ("zwsp-in-number", "/transfer 20\u200b43 @anna"),
    # invisible characters pasted into a word are dropped
    ("bom-in-number", "/transfer 2043\ufeff @anna"),
    # invisible characters pasted into a word are dropped
    ("zwj-in-number", "/transfer 20\u200d43 @anna"),
]


@pytest.mark.parametrize("text", [pytest.param(t, id=name) for name, t in VALID])
async def test_odd_but_valid_commands_transfer_exactly_once(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(yaml_text=MANY_SUPERVISORS_YAML) as h:  # its own: it moves a dialog
        x = await send(h, text, caplog)
        check_one_clear_reply(x)
        lines = x.reply.plain_text.splitlines()
        assert lines[0] == "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova"
        # naming the same dialog again is reported, not done again
        assert all(line.startswith("↪️ ") for line in lines[1:])
        assert x.transfers == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_the_same_dialog_for_four_thousand_characters_shows_the_picker(
    shared: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    x = await send(shared, long_message("/transfer ", "2043 ").rstrip(), caplog)
    check_one_clear_reply(x)
    assert x.reply.plain_text == "Dialog 2043 «Ivan Petrov — WhatsApp» is with Bob Lee. Move it to:"
    assert x.reply.button_data(), "the picker has buttons"
    assert x.transfers == []


async def test_a_burst_of_bad_input_gets_one_reply_each(
    shared: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # the short corpus all at once, from as many supervisors, before the bot has answered any:
    # handled side by side, no answer is lost, doubled or sent to the wrong chat
    texts = [text for _, text, _, _ in REFUSED if len(text) < 200]
    senders = [next(_users) for _ in texts]
    transfers = len(shared.rest_calls())
    with caplog.at_level(logging.ERROR):
        for user, text in zip(senders, texts, strict=True):
            shared.telegram.send_message(text, user_id=user, first_name="Tester")
        await shared.telegram.wait_for(
            lambda: all(shared.telegram.messages_to(user) for user in senders), timeout=15.0
        )
        await shared.settle()
    for user, (_, text, starts, ends) in zip(
        senders, [case for case in REFUSED if len(case[1]) < 200], strict=True
    ):
        [reply] = shared.telegram.messages_to(user)
        first = reply.plain_text.splitlines()[0]
        assert first.startswith(starts), (text, first)
        assert first.endswith(ends), (text, first)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert shared.rest_calls()[transfers:] == []
