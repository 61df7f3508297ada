"""Long replies end to end: a huge error code or many lines still reach the supervisor.

The fake Bot API parses every text as Telegram does (strictly) and refuses bad HTML or text
over 4096 characters, so a reply cut inside a tag or an escape would never arrive.
"""

from __future__ import annotations

import html

import pytest

from bot.sandbox.portal import Fault, SimDialog
from bot.sandbox.telegram import SentMessage, parse_telegram_html, utf16_length
from handlers.keyboards import TargetTap
from tests.conftest import ANNA, BOB, SUPPORT, make_portal
from tests.harness import CONFIG_YAML, OLGA, Harness, running_bot

RETRY = "re"
TRANSFER = "imopenlines.operator.transfer"
UNKNOWN = (
    "❌ Dialog 2043 «Ivan Petrov — WhatsApp»: Bitrix24 answered with an error the bot does not "
    "know. If it repeats, tell @it_ops. ("
)


def all_accepted(h: Harness, *, unchanged: int = 0) -> None:
    """Telegram took every message and edit the bot sent, but ``unchanged`` edits to a text
    the message had already ("message is not modified": done, not refused)."""
    calls = h.telegram.calls_to("sendMessage") + h.telegram.calls_to("editMessageText")
    refused = [str((c.response or {}).get("description")) for c in calls if not c.ok]
    assert [r for r in refused if "message is not modified" not in r] == []
    assert len(refused) == unchanged


def assert_shortened(message: SentMessage) -> None:
    """The reply is the unknown-error line, cut to fit one message, with the code in italics."""
    assert message.plain_text.startswith(UNKNOWN)
    assert message.plain_text.endswith("…")
    assert utf16_length(message.plain_text) <= 4096
    _, entities = parse_telegram_html(message.text, strict=True)
    assert [e["type"] for e in entities] == ["italic"]


@pytest.mark.parametrize(
    "code",
    ["E" * 5000, "&" * 5000, "😀" * 3000, "<b>" * 2000, "ERR_" + "Ж&" * 3000],
    ids=["letters", "ampersands", "emoji", "tags", "mixed"],
)
async def test_a_huge_error_code_still_reaches_the_supervisor(code: str) -> None:
    portal = make_portal()
    portal.inject("batch", Fault.error(code), carrying=TRANSFER)
    async with running_bot(portal) as h:
        reply = await h.say("/transfer 2043 @anna")
        await h.settle()
        assert_shortened(reply)
        assert reply.plain_text[len(UNKNOWN) : -1] in code, "the start of the code, as sent"
        assert h.messages_in(OLGA) == [reply.message_id], "one message, not pieces of a line"
        assert len(reply.text) <= 4 * 4096
        all_accepted(h)


async def test_a_huge_error_code_after_a_tap_turns_the_picker_into_the_reply() -> None:
    portal = make_portal()
    async with running_bot(portal) as h:
        picker = await h.say("/transfer 2043")
        portal.inject("batch", Fault.error(html.escape("<&>") * 2000), carrying=TRANSFER)
        await h.tap(picker, TargetTap(kind="o", id=ANNA).pack())  # answered before the work
        await h.telegram.wait_for(lambda: h.now(picker).plain_text.startswith("❌"))
        assert_shortened(h.now(picker))
        assert h.now(picker).reply_markup is None
        assert h.messages_in(OLGA) == [picker.message_id], "edited in place"
        all_accepted(h)


async def test_two_long_lines_go_out_as_two_messages_each_whole() -> None:
    portal = make_portal()
    codes = {"X" * 2500, "Y" * 2500}  # one line fits a message, two do not
    for code in codes:  # one look each: not batched, so each has its own answer
        portal.inject("imopenlines.dialog.get", Fault.error(code))
    unbatched = CONFIG_YAML.replace(
        "burst: ${BURST:-1000}\n", "burst: 1000\n  batch_calls: false\n"
    )
    async with running_bot(portal, yaml_text=unbatched) as h:
        await h.say("/transfer 2043 2045 @anna")
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) >= 2)
        await h.settle()
        shown = [m.plain_text for m in _latest(h)]
        assert [text.split(":")[0] for text in shown] == ["❌ Dialog 2043", "❌ Dialog 2045"]
        assert {text[-2501:-1] for text in shown} == codes, "whole, not shortened"
        all_accepted(h)


async def test_one_long_reason_for_two_dialogs_is_one_line() -> None:
    portal = make_portal()
    code = "X" * 2500
    portal.inject("batch", Fault.error(code), carrying="user.get")  # the looks
    async with running_bot(portal) as h:
        reply = await h.say("/transfer 2043 2045 @anna")
        await h.settle()
        assert reply.plain_text.startswith("❌ Dialogs 2043, 2045: Bitrix24 answered with an error")
        assert reply.plain_text.endswith(f"({code})"), "whole, not shortened"
        assert h.messages_in(OLGA) == [reply.message_id]
        all_accepted(h)


async def test_a_long_result_after_a_confirming_tap_continues_in_new_messages() -> None:
    portal = make_portal()
    numbers = list(range(5000, 5020))
    for n in numbers:
        name = f"Guest {n} " + "with a very long name from a web form " * 3
        portal.dialogs[n] = SimDialog(n, n, name, owner=BOB, line_id=SUPPORT)
        portal.dialogs[n].locked = True  # another transfer holds it: this one is dropped
    command = "/transfer " + " ".join(map(str, numbers)) + " @anna"
    async with running_bot(portal) as h:
        confirm = await h.say(command)
        await h.tap(confirm, "ok")
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) >= 2)
        await h.settle()
        messages = _latest(h)
        assert messages[0].message_id == confirm.message_id, "the confirmation became the answer"
        shown = [line for m in messages for line in m.plain_text.split("\n")]
        assert len(shown) == len(numbers), "every line whole, in order"
        for n, line in zip(numbers, shown, strict=True):
            assert line.startswith(f"❌ Bitrix24 accepted the transfer, but dialog {n} «Guest ")
            assert line.endswith("or the dialog was being moved already.")
        # the button stays on the message that was tapped, where its pending action is kept
        assert [h.labels(m) for m in messages] == [["🔁 Try again"]] + [[]] * (len(messages) - 1)

        # Try again, still dropped: the tapped message reads so already (Telegram refuses
        # the edit as "not modified"), and the rest of the answer follows it again
        before = h.messages_in(OLGA)
        await h.tap(confirm, RETRY)
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) > len(before))
        await h.settle()
        again = _latest(h)
        assert [m.message_id for m in again][: len(before)] == before
        newest = [again[0], *again[len(before) :]]
        assert [line for m in newest for line in m.plain_text.split("\n")] == shown
        assert h.labels(again[0]) == ["🔁 Try again"]
        all_accepted(h, unchanged=1)


def _latest(h: Harness) -> list[SentMessage]:
    """The bot's messages to Olga as they read now, oldest first."""
    latest: dict[int, SentMessage] = {}
    for m in h.telegram.messages_to(OLGA):
        latest[m.message_id] = m
    return [latest[k] for k in sorted(latest)]
