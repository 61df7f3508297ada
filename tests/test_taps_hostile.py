"""Taps that should not do anything — crafted, oversized, stale, on the wrong message — and
taps whose handling goes wrong: each is answered exactly once and changes nothing.

End to end over the real bot (fake Telegram, portal simulator), counting REST calls and the
``answerCallbackQuery`` calls of every callback query; then the pending store's checks alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, DialogRef
from bot.config import parse_config
from bot.directory import Directory, Kind
from bot.handoff import Handoff
from bot.pending import Action, Expired, NotOffered, Pending, PendingStore, Taken
from bot.sandbox.portal import Fault, SimOperator
from bot.sandbox.telegram import SentMessage
from bot.storage import SqliteStorage
from handlers.keyboards import (
    CancelTap,
    ConfirmTap,
    DialogTap,
    PageTap,
    RetryTap,
    TargetTap,
    parse,
)
from tests.conftest import ANNA, BOB, PAVEL, SALES, SUPPORT, make_portal
from tests.harness import CONFIG_YAML, OLGA, OTHER_GROUP, PETR, Harness, running_bot

TRANSFER = "imopenlines.operator.transfer"
NOT_VALID = "This button is not valid any more."
INTERNAL_ERROR = (
    "Something went wrong inside the bot. Check the dialog in Bitrix24 before trying again, "
    "and tell @it_ops."
)
TO_ANNA = TargetTap(kind="o", id=ANNA).pack()
OK = ConfirmTap().pack()
RETRY = RetryTap().pack()


class Taps:
    """Presses buttons (any data, on any message of the bot) and keeps the query IDs, to
    check that each query got exactly one ``answerCallbackQuery``."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.ids: list[str] = []

    def press(self, message: SentMessage, data: str, *, user: int = OLGA) -> str:
        """Press without waiting; returns the callback query ID."""
        query_id = self.h.telegram.press_button(
            message.message_id, data, user_id=user, chat_id=message.chat_id, check_button=False
        )
        self.ids.append(query_id)
        return query_id

    async def tap(self, message: SentMessage, data: str, *, user: int = OLGA) -> dict[str, Any]:
        """Press once the bot is idle (a command keeps its buttons right after sending
        them), wait until the bot is done, and return the tap's answer."""
        await self.h.settle()
        query_id = self.press(message, data, user=user)
        await self.h.telegram.wait_for(lambda: query_id in self.answer_counts())
        await self.h.settle()
        [answer] = [
            a for a in self.h.telegram.callback_answers if a["callback_query_id"] == query_id
        ]
        return answer

    def answer_counts(self) -> Counter[str]:
        """``answerCallbackQuery`` calls per query ID, accepted or refused by Telegram."""
        calls = self.h.telegram.calls_to("answerCallbackQuery")
        return Counter(str(call.params["callback_query_id"]) for call in calls)

    def assert_each_answered_once(self) -> None:
        """Every query pressed here got one answer, which Telegram accepted."""
        assert self.answer_counts() == Counter(self.ids)
        assert all(call.ok for call in self.h.telegram.calls_to("answerCallbackQuery"))


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- crafted and malformed data


async def test_targets_the_picker_did_not_offer_are_refused_and_its_buttons_still_work() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")  # Bob holds it: the picker leaves him out
        shown, calls = h.now(picker), len(h.portal.calls)
        crafted = [
            TargetTap(kind="o", id=BOB).pack(),  # the holder, not offered
            "t:o:-5",  # USER_ID=-5
            "t:x:3",  # no such kind (was taken as queue 3)
            TargetTap(kind="q", id=999).pack(),  # no such queue
            TargetTap(kind="o", id=PAVEL + 1000).pack(),
            "t:o:015",  # Anna, spelt as the bot never would
            "t:o:+15",
            "t:o:1\u0665",  # Anna in Arabic-Indic digits, which int() reads
        ]
        for data in crafted:
            answer = await taps.tap(picker, data)
            assert (answer["text"], answer["show_alert"]) == (NOT_VALID, False), data
        assert len(h.portal.calls) == calls, "no REST call at all, not even a look"
        assert h.now(picker) == shown, "the message is as it was"
        answer = await taps.tap(picker, TO_ANNA)  # the real button: its claim was not spent
        assert answer["text"] == "Working…"
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        taps.assert_each_answered_once()


async def test_a_did_you_mean_tap_may_only_choose_a_suggestion() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        question = await h.say("/transfer 2043 @ana")
        assert h.labels(question) == ["🟢 Anna Smirnova", "Cancel"]
        for data in (TargetTap(kind="q", id=SUPPORT).pack(), TargetTap(kind="o", id=PAVEL).pack()):
            assert (await taps.tap(question, data))["text"] == NOT_VALID
        assert h.rest_calls() == []
        await taps.tap(question, TO_ANNA)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        taps.assert_each_answered_once()


async def test_a_dialog_the_question_did_not_offer_is_refused() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        result = await h.say("/transfer 2043 2045 @anna")
        h.telegram.send_message(
            "/transfer @bob", user_id=OLGA, reply_to_message_id=result.message_id
        )
        await h.telegram.wait_for(lambda: len(h.messages_in(OLGA)) == 2)
        question = h.telegram.messages_to(OLGA)[1]
        assert question.plain_text == "Which dialog?"
        calls = len(h.rest_calls())
        for data in (DialogTap(chat=2046).pack(), "d:-5", "d:2045:1", "d:02045"):
            assert (await taps.tap(question, data))["text"] == NOT_VALID, data
        assert len(h.rest_calls()) == calls
        assert h.now(question).plain_text == "Which dialog?"
        await taps.tap(question, DialogTap(chat=2045).pack())
        assert h.rest_calls()[calls:] == [{"CHAT_ID": 2045, "USER_ID": BOB}]
        taps.assert_each_answered_once()


async def test_oversized_and_malformed_data_is_answered_and_does_nothing() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")
        shown, calls = h.now(picker), len(h.portal.calls)
        junk = [
            "t:o:" + "0" * 10_240 + "15",  # 10 KB that aiogram's own filter reads as Anna
            "x" * 10_240,
            "t:o:15:1",
            "t:o",
            "p:abc",
            "ok:",
            ":",
            "",
            "zz:1",
            "t:o:99999999999999999999999999999999999999999999999999999999",
        ]
        for data in junk:
            answer = await taps.tap(picker, data)
            assert answer["text"] == NOT_VALID, data[:20]
        assert len(h.portal.calls) == calls
        assert h.now(picker) == shown
        await taps.tap(picker, TO_ANNA)
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
        taps.assert_each_answered_once()


# ---------------------------------------------------------------- the wrong message


async def test_a_tap_on_a_message_of_another_chat_does_nothing() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")  # Olga's private chat
        other = await h.say("/transfer 2045 @anna", user=PETR, chat=OTHER_GROUP)
        assert other.message_id == picker.message_id, "message IDs are per chat: same number"
        calls = len(h.portal.calls)
        for data in (TO_ANNA, OK, CancelTap().pack(), PageTap(page=0).pack()):
            assert (await taps.tap(other, data))["text"] == NOT_VALID, data
        assert len(h.portal.calls) == calls
        assert h.messages_in(OTHER_GROUP) == [other.message_id]
        await taps.tap(picker, TO_ANNA)  # the picker of the other chat is untouched
        assert h.rest_calls()[-1] == {"CHAT_ID": 2043, "USER_ID": ANNA}
        taps.assert_each_answered_once()


async def test_a_tap_on_a_message_without_buttons_does_nothing() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        result = await h.say("/transfer 2043 @anna")
        assert result.reply_markup is None
        for data in (OK, RETRY, TargetTap(kind="o", id=BOB).pack(), CancelTap().pack()):
            assert (await taps.tap(result, data))["text"] == NOT_VALID, data
        assert len(h.rest_calls()) == 1, "the command's own transfer only"
        assert h.now(result).plain_text.startswith("✅ Dialog 2043")
        taps.assert_each_answered_once()


async def test_a_stale_tap_on_a_confirm_message_spends_no_claim() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        message = await h.say("/transfer 2043 2045 2046")  # a picker for three dialogs
        await taps.tap(message, TO_ANNA)  # ... which becomes "Transfer 3 dialogs?"
        assert h.now(message).plain_text.startswith("Transfer 3 dialogs to Anna Smirnova?")
        stale = [
            TO_ANNA,  # the picker's buttons, tapped on a phone that still shows them
            TargetTap(kind="q", id=SALES).pack(),
            PageTap(page=0).pack(),
            DialogTap(chat=2043).pack(),
            RETRY,
        ]
        for data in stale:
            assert (await taps.tap(message, data))["text"] == NOT_VALID, data
        assert h.rest_calls() == []
        answer = await taps.tap(message, OK)  # the live button: not "Already being done"
        assert answer["text"] == "Working…"
        assert h.rest_calls() == [
            {"CHAT_ID": 2043, "USER_ID": ANNA},
            {"CHAT_ID": 2045, "USER_ID": ANNA},
            {"CHAT_ID": 2046, "USER_ID": ANNA},
        ]
        assert h.now(message).plain_text.count("✅") == 3
        taps.assert_each_answered_once()


# ---------------------------------------------------------------- answered exactly once


def many_operators(count: int) -> str:
    extra = "".join(
        f"  - {{key: op{i:02d}, bitrix_id: {100 + i}, name: Operator {i:02d}}}\n"
        for i in range(count)
    )
    return CONFIG_YAML.replace("queues:\n", extra + "queues:\n")


async def test_repeated_next_and_back_are_each_answered_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    portal = make_portal()
    for i in range(14):  # 19 targets: pages of 8, 8 and 3
        portal.operators[100 + i] = SimOperator(100 + i, f"Operator {i:02d}")
    async with running_bot(portal, yaml_text=many_operators(14)) as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")
        first = h.labels(picker)
        for _ in range(2):  # the second shows the same page: Telegram says "not modified"
            assert (await taps.tap(picker, PageTap(page=1).pack()))["text"] is None
        second = h.labels(picker)
        assert second != first and "« Back" in second
        await h.settle()
        for _ in range(3):  # a burst, all at once
            taps.press(picker, PageTap(page=2).pack())
        await h.telegram.wait_for(lambda: len(taps.answer_counts()) == len(taps.ids))
        await h.settle()
        assert "Next »" not in h.labels(picker)
        for _ in range(2):
            await taps.tap(picker, PageTap(page=1).pack())
        assert h.labels(picker) == second
        for page in (3, -1, 10_000):  # pages the picker does not have
            assert (await taps.tap(picker, PageTap(page=page).pack()))["text"] == NOT_VALID
        refused = [c for c in h.telegram.calls_to("editMessageReplyMarkup") if not c.ok]
        assert refused, "the repeated taps did meet 'message is not modified'"
        assert h.messages_in(OLGA) == [picker.message_id], "no error message"
        assert errors_logged(caplog) == []
        taps.assert_each_answered_once()
        await taps.tap(picker, TargetTap(kind="o", id=110).pack())
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": 110}]
        taps.assert_each_answered_once()


async def test_try_again_with_the_same_result_stays_usable() -> None:
    portal = make_portal()
    portal.dialogs[2043].locked = True  # another transfer holds it: the portal drops ours
    async with running_bot(portal) as h:
        taps = Taps(h)
        reply = await h.say("/transfer 2043 @anna")
        assert h.labels(reply) == ["🔁 Try again"]
        await taps.tap(reply, RETRY)  # the same result: the edit changes nothing
        assert not h.telegram.calls_to("editMessageText")[-1].ok
        portal.dialogs[2043].locked = False
        assert (await taps.tap(reply, RETRY))["text"] == "Working…", "not 'Already being done'"
        assert h.now(reply).plain_text.startswith("✅ Dialog 2043")
        assert len(h.rest_calls()) == 3
        taps.assert_each_answered_once()


async def test_a_failure_after_working_is_logged_once_and_told_under_the_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Handoff, *args: object) -> None:
        raise RuntimeError("a bug in the workflow")

    monkeypatch.setattr(Handoff, "transfer", broken)
    async with running_bot() as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")
        answer = await taps.tap(picker, TO_ANNA)
        assert (answer["text"], answer["show_alert"]) == ("Working…", False)
        [logged] = errors_logged(caplog)
        assert logged.name == "handlers.errors"
        assert isinstance(logged.exc_info and logged.exc_info[1], RuntimeError)
        assert h.telegram.messages_to(OLGA)[-1].plain_text == INTERNAL_ERROR
        assert h.rest_calls() == []
        taps.assert_each_answered_once()


async def test_a_failure_before_the_answer_gets_an_alert(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: PendingStore, *args: object) -> None:
        raise RuntimeError("storage away")

    monkeypatch.setattr(PendingStore, "take", broken)
    async with running_bot() as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")
        answer = await taps.tap(picker, TO_ANNA)
        assert (answer["text"], answer["show_alert"]) == (INTERNAL_ERROR, True)
        assert len(errors_logged(caplog)) == 1
        assert h.messages_in(OLGA) == [picker.message_id], "the alert said it: no message"
        assert h.portal.calls_to(TRANSFER) == []
        taps.assert_each_answered_once()


async def test_garbage_from_the_portal_is_an_outcome_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    portal = make_portal()
    async with running_bot(portal) as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043")
        portal.inject("batch", Fault.raw(200, "<html>proxy says hello</html>"))
        assert (await taps.tap(picker, TO_ANNA))["text"] == "Working…"
        assert h.now(picker).plain_text.startswith("❌ Dialog 2043")
        assert [r for r in errors_logged(caplog) if r.name == "handlers.errors"] == []
        taps.assert_each_answered_once()


async def test_a_tap_from_a_non_supervisor_is_answered_once() -> None:
    async with running_bot() as h:
        taps = Taps(h)
        picker = await h.say("/transfer 2043", user=PETR, chat=OTHER_GROUP)
        answer = await taps.tap(picker, "x" * 10_240, user=999999999)
        assert answer["show_alert"] is True
        assert h.rest_calls() == []
        taps.assert_each_answered_once()


# ---------------------------------------------------------------- the checks alone


DIRECTORY = Directory.from_config(parse_config(CONFIG_YAML, {}))
ANNA_T = DIRECTORY.resolve("@anna")
SUPPORT_T = DIRECTORY.resolve("#sup")
IVAN = Dialog(2043, "Ivan", BOB, SUPPORT, "whatsapp")
MARIA = Dialog(2044, "Maria", ANNA, SUPPORT, None)


def refs(*numbers: int) -> tuple[DialogRef, ...]:
    return tuple(DialogRef(DialogKind.CHAT, n) for n in numbers)


def test_a_pending_offers_only_what_its_buttons_show() -> None:
    pick = Pending(Action.PICK, refs(2043), 7, looked=(IVAN,), offered=(SUPPORT_T, ANNA_T))
    assert pick.target_offered(Kind.OPERATOR, ANNA) == ANNA_T
    assert pick.target_offered(Kind.QUEUE, ANNA) is None, "the kind counts, not just the ID"
    assert pick.target_offered(Kind.OPERATOR, BOB) is None
    assert pick.dialog_offered(2043) is None, "a picker offers no dialog"
    assert pick.page_offered(0) and not pick.page_offered(1) and not pick.page_offered(-1)
    suggest = Pending(Action.SUGGEST, refs(2043), 7, offered=(ANNA_T,))
    assert suggest.target_offered(Kind.OPERATOR, ANNA) == ANNA_T
    assert not suggest.page_offered(0)
    choose = Pending(Action.CHOOSE, refs(2043, 2044), 7, looked=(IVAN, MARIA), offered=(ANNA_T,))
    assert choose.dialog_offered(2044) == MARIA
    assert choose.dialog_offered(2045) is None
    assert choose.target_offered(Kind.OPERATOR, ANNA) is None, "a question offers dialogs only"
    confirm = Pending(Action.CONFIRM_TRANSFER, refs(2043), 7, target=ANNA_T, offered=(ANNA_T,))
    assert confirm.target_offered(Kind.OPERATOR, ANNA) is None


@pytest.mark.parametrize(
    ("tap", "data", "parsed"),
    [
        (TargetTap, "t:o:15", TargetTap(kind="o", id=15)),
        (TargetTap, "t:q:3", TargetTap(kind="q", id=3)),
        (TargetTap, "t:x:3", None),
        (TargetTap, "t:o:015", None),
        (TargetTap, "t:o: 15", None),
        (TargetTap, "t:o:15\n", None),
        (TargetTap, "t:o:" + "0" * 100 + "15", None),
        (TargetTap, "p:1", None),
        (PageTap, "p:1", PageTap(page=1)),
        (PageTap, "p:1.0", None),
        (PageTap, "p:true", None),
        (DialogTap, "d:2043", DialogTap(chat=2043)),
        (ConfirmTap, "ok", ConfirmTap()),
        (ConfirmTap, "ok:", None),
        (CancelTap, None, None),
    ],
)
def test_only_data_the_bot_could_have_made_is_read(tap: Any, data: str | None, parsed: Any) -> None:
    assert parse(tap, data) == parsed


@pytest.fixture
async def store() -> AsyncIterator[PendingStore]:
    storage = SqliteStorage(":memory:", boot="test")
    await storage.open()
    yield PendingStore(storage, expiry_s=60)
    await storage.close()


def is_confirm(p: Pending) -> bool:
    return p.action is Action.CONFIRM_TRANSFER


def is_pick(p: Pending) -> bool:
    return p.action is Action.PICK


async def test_take_checks_the_tap_before_it_claims(store: PendingStore) -> None:
    key = (1, 1)
    await store.put(key, Pending(Action.CONFIRM_TRANSFER, refs(2043), 7, target=ANNA_T))
    with pytest.raises(NotOffered):
        await store.take(key, is_pick)  # a stale picker tap
    with pytest.raises(NotOffered):
        await store.take((1, 2), is_confirm)  # no buttons there
    pending = await store.take(key, is_confirm)  # the live button still wins
    assert pending.claimed and pending.target == ANNA_T
    with pytest.raises(Taken):
        await store.take(key, is_confirm)
    with pytest.raises(NotOffered):  # not offered comes before taken
        await store.take(key, is_pick)


async def test_old_buttons_are_expired_and_none_at_all_are_not_offered() -> None:
    now = [1000.0]
    storage = SqliteStorage(":memory:", boot="test")
    await storage.open()
    try:
        store = PendingStore(storage, expiry_s=60, clock=lambda: now[0])
        await store.put((1, 1), Pending(Action.PICK, refs(2043), 7, offered=(ANNA_T,)))
        now[0] += 61
        with pytest.raises(Expired):
            await store.look((1, 1), is_pick)
        with pytest.raises(Expired):
            await store.take((1, 1), is_pick)
        with pytest.raises(NotOffered):
            await store.look((1, 2), is_pick)
    finally:
        await storage.close()


async def test_a_claim_that_changed_under_the_check_is_given_back(
    store: PendingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = (1, 1)
    await store.put(key, Pending(Action.PICK, refs(2043, 2044, 2045), 7, offered=(ANNA_T,)))
    claim = store.storage.claim_pending

    async def another_tap_first(k: str, since: float) -> Any:
        # between our check and our claim, another tap turned the picker into a confirmation
        confirm = Pending(Action.CONFIRM_TRANSFER, refs(2043, 2044, 2045), 8, target=ANNA_T)
        await PendingStore.put(store, key, confirm)
        return await claim(k, since)

    monkeypatch.setattr(store.storage, "claim_pending", another_tap_first)
    with pytest.raises(NotOffered):
        await store.take(key, is_pick)
    monkeypatch.undo()
    now = await store.get(key)
    assert now is not None and now.action is Action.CONFIRM_TRANSFER
    assert not now.claimed, "given back: the confirming tap can still take it"
    assert (await store.take(key, is_confirm)).user_id == 8


async def test_what_the_buttons_offer_survives_storage(store: PendingStore) -> None:
    stored = Pending(Action.PICK, refs(2043), 7, looked=(IVAN,), offered=(SUPPORT_T, ANNA_T))
    await store.put((1, 1), stored)
    assert await store.get((1, 1)) == stored
    # buttons stored by a version that did not keep what they offer: they offer nothing
    data = json.loads((await store.storage.get_pending("1:1", 0.0) or ("{}",))[0])
    del data["offered"]
    await store.storage.put_pending("1:2", json.dumps(data), stored.created_at)
    with pytest.raises(NotOffered):
        await store.take((1, 2), lambda p: p.target_offered(Kind.OPERATOR, ANNA) is not None)


async def test_many_taps_at_once_one_wins_and_the_rest_are_told(store: PendingStore) -> None:
    await store.put((1, 1), Pending(Action.CONFIRM_TRANSFER, refs(2043), 7, target=ANNA_T))
    results = await asyncio.gather(
        *(store.take((1, 1), is_confirm) for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, Pending) for r in results) == 1
    assert sum(isinstance(r, Taken) for r in results) == 4
