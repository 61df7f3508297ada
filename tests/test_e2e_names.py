"""Right the first time from a phone, end to end: commands in any case, names in either
script, full names, "№ 3568", and replies that name the wrong word of a command that does not
parse — with nothing sent to Bitrix24 unless the whole command is understood.

The real bot polls the fake Bot API and calls the portal simulator (tests/harness.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from bot.sandbox.portal import PortalSimulator, SimOperator
from tests.conftest import ANNA, BOB, SUPPORT, make_portal
from tests.harness import (
    CONFIG_YAML,
    CROWD,
    OTHER_GROUP,
    PETR,
    Harness,
    running_bot,
    with_supervisors,
)

TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"
ELENA = 31  # an operator whose key and name are Cyrillic

NAMES_YAML = with_supervisors(60, CONFIG_YAML).replace(
    "  - {key: pavel,",
    "  - {key: елена, bitrix_id: 31, name: Елена Ёлкина, aliases: [ёлкина]}\n  - {key: pavel,",
    1,
)

USAGE_EN = ["Usage: /transfer <dialog> <who>", "Example: /transfer 2043 @anna"]
USAGE_RU = ["Формат: /transfer <диалог> <кому>", "Пример: /transfer 2043 @anna"]
FINISH_EN = ["Usage: /finish <dialog> [<dialog> …]", "Example: /finish 2043"]
FINISH_RU = ["Формат: /finish <диалог> [<диалог> …]", "Пример: /finish 2043"]
COMMANDS_EN = "Commands: /transfer /finish /history /operators /queues /help"
COMMANDS_RU = "Команды: /transfer /finish /history /operators /queues /help"

# one event loop for the module, so that one running bot can serve every refused command
pytestmark = pytest.mark.asyncio(loop_scope="module")


def names_portal() -> PortalSimulator:
    """The usual portal, with Елена Ёлкина (31) among its operators."""
    portal = make_portal()
    portal.operators[ELENA] = SimOperator(ELENA, "Елена Ёлкина")
    return portal


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared() -> AsyncIterator[Harness]:
    """One bot for the commands that move nothing; each speaks from a chat of its own."""
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        yield h


def _fresh_users() -> Iterator[int]:
    yield from range(CROWD, CROWD + 60)


_users = _fresh_users()


async def refused(h: Harness, text: str, language: str = "en") -> list[str]:
    """Say ``text`` as a fresh supervisor; the reply's lines, once nothing about a dialog
    went to the portal (who is online may be asked, for the marks on "did you mean")."""
    calls = len(h.portal.calls)
    reply = await h.say(text, user=next(_users), language=language)
    await h.settle()
    sent = [c.method for c in h.portal.calls[calls:] if c.method not in ("batch", "user.get")]
    assert sent == [], "nothing about a dialog may reach Bitrix24"
    return reply.plain_text.splitlines()


# ---- 1. commands in any case ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["/Transfer 2044 @bob", "/TRANSFER 2044 @bob", "/transfer@Handoff_Test_Bot 2044 @bob"],
)
async def test_a_command_in_any_case_works(text: str) -> None:
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        reply = await h.say(text)
        assert h.rest_calls() == [{"CHAT_ID": 2044, "USER_ID": BOB}]
        assert reply.plain_text == "✅ Dialog 2044 «Maria — Telegram»: Anna Smirnova → Bob Lee"


async def test_an_upper_case_command_with_the_bot_name_works_in_a_group() -> None:
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        reply = await h.say("/TRANSFER@HANDOFF_TEST_BOT 2043 @anna", user=PETR, chat=OTHER_GROUP)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert reply.plain_text.startswith("✅ Dialog 2043")
        assert reply.reply_to_message_id is not None


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("/HELP", "I move Bitrix24 dialogs"),
        ("/Start", "I move Bitrix24 dialogs"),
        ("/Operators", "Operators"),
        ("/QUEUES", "Queues"),
        ("/History 2043", "Nothing recorded about 2043."),
    ],
)
async def test_every_command_in_any_case(shared: Harness, text: str, starts: str) -> None:
    assert (await refused(shared, text))[0].startswith(starts)


async def test_finish_in_any_case_asks_to_confirm(shared: Harness) -> None:
    reply = await shared.say("/FINISH 2043", user=next(_users))
    assert reply.plain_text.startswith("Finish this dialog?")
    assert shared.rest_calls("imopenlines.operator.another.finish") == []


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        (
            "/trasnfer 2043 @anna",
            "en",
            ["There is no /trasnfer command. Did you mean /transfer?", COMMANDS_EN],
        ),
        ("/Finsh 2043", "en", ["There is no /Finsh command. Did you mean /finish?", COMMANDS_EN]),
        ("/foo", "en", ["There is no /foo command.", COMMANDS_EN]),
        (
            "/трансфер 2043 @анна",
            "ru",
            ["Команды /трансфер нет. Может быть, /transfer?", COMMANDS_RU],
        ),
        ("/foo", "ru", ["Команды /foo нет.", COMMANDS_RU]),
        ("/foo@handoff_test_bot", "en", ["There is no /foo command.", COMMANDS_EN]),
    ],
)
async def test_an_unknown_command_gets_did_you_mean_and_the_commands(
    shared: Harness, text: str, language: str, expected: list[str]
) -> None:
    assert await refused(shared, text, language) == expected


async def test_plain_text_still_points_to_help(shared: Harness) -> None:
    assert await refused(shared, "transfer 2043 to anna") == [
        "I only understand commands. See /help."
    ]


async def test_in_a_group_only_an_unknown_command_for_this_bot_is_answered() -> None:
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        for text in ("/foo", "/trasnfer 2043 @anna", "/foo@other_bot", "/trasnfer@other_bot"):
            h.telegram.send_message(text, user_id=PETR, chat_id=OTHER_GROUP)
        await h.settle()
        assert h.telegram.messages_to(OTHER_GROUP) == []  # maybe another bot's commands
        reply = await h.say("/trasnfer@handoff_test_bot 2043 @anna", user=PETR, chat=OTHER_GROUP)
        assert reply.plain_text.splitlines() == [
            "There is no /trasnfer command. Did you mean /transfer?",
            COMMANDS_EN,
        ]
        assert reply.reply_to_message_id is not None
        assert h.portal.calls == []


# ---- 2. names in either script -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        (
            "/transfer 2043 @анна",
            "ru",
            "✅ Диалог 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ),
        (
            "/transfer 2043 Анна Смирнова",
            "ru",
            "✅ Диалог 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ),
        (
            "/transfer 2043 Anna Smirnova",
            "en",
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ),
        (
            "/transfer 2043 smirnova anna",
            "en",
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ),
    ],
)
async def test_anna_in_either_script_and_by_full_name(
    text: str, language: str, expected: str
) -> None:
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        reply = await h.say(text, language=language)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        assert reply.plain_text == expected


@pytest.mark.parametrize(
    ("target", "language"),
    [
        ("@елена", "ru"),
        ("@елкина", "ru"),
        ("@Ёлкина", "ru"),
        ("Елена Ёлкина", "ru"),
        ("@elena", "en"),
        ("@Yelena", "en"),
        ("@elkina", "en"),
        ("Elena Elkina", "en"),
    ],
)
async def test_a_cyrillic_key_is_found_from_either_keyboard(target: str, language: str) -> None:
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        reply = await h.say(f"/transfer 2043 {target}", language=language)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ELENA}]
        assert reply.plain_text.endswith("Bob Lee → Елена Ёлкина")


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("/transfer 2043 @ана", "ru", "Не знаю «@ана». Может быть, @anna (Anna Smirnova)?"),
        ("/transfer 2043 @elna", "en", "I don't know «@elna». Did you mean @елена (Елена Ёлкина)?"),
    ],
)
async def test_did_you_mean_crosses_scripts(
    shared: Harness, text: str, language: str, expected: str
) -> None:
    assert await refused(shared, text, language) == [expected]


# ---- 3. the grammar: session numbers, and what a command that does not parse gets ------------


@pytest.mark.parametrize("dialog", ["№ 3568", "№3568", "s 3568", "S3568"])
async def test_a_session_number_with_its_prefix_apart_or_not(dialog: str) -> None:
    async with running_bot(names_portal(), yaml_text=NAMES_YAML) as h:
        reply = await h.say(f"/transfer {dialog} #support")
        assert h.rest_calls(DIALOG_GET)[0] == {"SESSION_ID": 3568}
        assert h.rest_calls() == [{"CHAT_ID": 2044, "QUEUE_ID": SUPPORT}]
        assert reply.plain_text.startswith("✅ Dialog 2044 «Maria — Telegram»")


@pytest.mark.parametrize(
    ("text", "language", "first"),
    [
        ("/transfer 2043 @bob please", "en", "2043 → Bob Lee: I don't understand «please»."),
        (
            "/transfer 2043 Anna Smirnova please",
            "en",
            "2043 → Anna Smirnova: I don't understand «please».",
        ),
        (
            "/transfer 2043 2044 @anna @bob",
            "en",
            "2043, 2044 → Anna Smirnova or Bob Lee? One name per command.",
        ),
        (
            "/transfer 2043 Anna Smirnova Bob",
            "en",
            "2043 → Anna Smirnova or Bob Lee? One name per command.",
        ),
        ("/transfer foo @anna", "en", "«foo» is not a dialog number."),
        ("/transfer 2043 dialog @anna", "en", "«dialog» is not a dialog number."),
        (
            "/transfer 2043 @anna!",
            "en",
            "2043 → ?: «@anna!» is not a name (use @name, #queue, user:15 or queue:3).",
        ),
        ("/transfer 2043 @боб пожалуйста", "ru", "2043 → Bob Lee: не понимаю «пожалуйста»."),
        (
            "/transfer 2043 Анна Смирнова срочно",
            "ru",
            "2043 → Anna Smirnova: не понимаю «срочно».",
        ),
        ("/transfer 2043 @анна @боб", "ru", "2043 → Anna Smirnova или Bob Lee? Нужно одно имя."),
        ("/transfer диалог @анна", "ru", "«диалог» — не номер диалога."),
        (
            "/transfer s3567 @анна!",
            "ru",
            "s3567 → ?: «@анна!» — не имя (используйте @имя, #очередь, user:15 или queue:3).",
        ),
    ],
)
async def test_a_command_that_does_not_parse_names_the_wrong_word(
    shared: Harness, text: str, language: str, first: str
) -> None:
    usage = USAGE_RU if language == "ru" else USAGE_EN
    assert await refused(shared, text, language) == [first, *usage]


# ---- 4. each command its own usage ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "first"),
    [
        ("/finish 2043 @bob", "en", "/finish takes dialogs only; «@bob» is not one."),
        ("/finish 2043 #support", "en", "/finish takes dialogs only; «#support» is not one."),
        ("/finish abc", "en", "«abc» is not a dialog number."),
        ("/finish 2043 @боб", "ru", "/finish принимает только диалоги, а «@боб» — не диалог."),
        ("/finish абв", "ru", "«абв» — не номер диалога."),
    ],
)
async def test_finish_mistakes_get_the_finish_usage(
    shared: Harness, text: str, language: str, first: str
) -> None:
    usage = FINISH_RU if language == "ru" else FINISH_EN
    assert await refused(shared, text, language) == [first, *usage]
