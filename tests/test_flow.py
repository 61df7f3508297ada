"""What a command leads to, and the pending store behind buttons — without Telegram."""

from __future__ import annotations

import pytest

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, DialogRef, TransferCommand, UsageError, parse_transfer
from bot.config import parse_config
from bot.directory import Directory, UnknownName
from bot.flow import Misread, Plan, Step, picker_page, picker_targets, plan_transfer
from bot.pending import Action, Expired, NotOffered, Pending, PendingStore, Taken
from bot.storage import SqliteStorage
from tests.harness import CONFIG_YAML

DIRECTORY = Directory.from_config(parse_config(CONFIG_YAML, {}))


def refs(*numbers: int) -> tuple[DialogRef, ...]:
    return tuple(DialogRef(DialogKind.CHAT, n) for n in numbers)


@pytest.mark.parametrize(
    ("dialogs", "target", "replied", "step"),
    [
        ((), None, (), Step.USAGE),
        ((), "@anna", (), Step.USAGE),
        ((), "@anna", refs(2043), Step.EXECUTE),
        ((), None, refs(2043), Step.PICK),
        ((), "@anna", refs(2043, 2044), Step.CHOOSE),
        ((), None, refs(2043, 2044), Step.CHOOSE),
        (refs(2043), None, refs(2044, 2045), Step.PICK),  # typed dialogs win over the reply
        (refs(2043), "@anna", (), Step.EXECUTE),
        (refs(2043, 2044), "@anna", (), Step.EXECUTE),
        (refs(2043, 2044, 2045), "@anna", (), Step.CONFIRM),
        (refs(2043), "@ana", (), Step.SUGGEST),
        (refs(2043), "@zzzzzz", (), Step.USAGE),
    ],
)
def test_plan(
    dialogs: tuple[DialogRef, ...], target: str | None, replied: tuple[DialogRef, ...], step: Step
) -> None:
    plan = plan_transfer(TransferCommand(dialogs, (target,) if target else ()), replied, DIRECTORY)
    assert plan.step is step


def test_unknown_name_without_suggestions_is_usage_with_the_error() -> None:
    plan = plan_transfer(TransferCommand(refs(1), ("@zzzzzz",)), (), DIRECTORY)
    assert isinstance(plan.error, UnknownName)
    assert plan.error.candidates == ()


# ---- the words after the dialogs ---------------------------------------------------------


def plan_of(args: str, replied: tuple[DialogRef, ...] = ()) -> Plan:
    return plan_transfer(parse_transfer(args), replied, DIRECTORY)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ("2043 Anna Smirnova", "Anna Smirnova"),
        ("2043 anna smirnova", "Anna Smirnova"),
        ("2043 Анна Смирнова", "Anna Smirnova"),
        ("2043 Смирнова Анна", "Anna Smirnova"),
        ("2043 @анна", "Anna Smirnova"),
        ("2043 @Аня", "Anna Smirnova"),
        ("№ 3568 Боб", "Bob Lee"),
        ("2043 Bob Lee", "Bob Lee"),
        ("2043 #Support line", "Support line"),
        ("2043 Павел Орлов", "Pavel Orlov"),
    ],
)
def test_a_name_of_one_or_more_words_in_either_script(args: str, name: str) -> None:
    plan = plan_of(args)
    assert plan.step is Step.EXECUTE
    assert plan.target is not None and plan.target.name == name


@pytest.mark.parametrize(
    ("args", "target", "word"),
    [
        ("2043 @bob please", "Bob Lee", "please"),
        ("2043 Anna Smirnova please", "Anna Smirnova", "please"),
        ("2043 Анна Смирнова пожалуйста", "Anna Smirnova", "пожалуйста"),
        ("2043 @боб срочно!", "Bob Lee", "срочно!"),
        ("2043 anna smirnova now please", "Anna Smirnova", "now"),
    ],
)
def test_a_word_after_the_name_is_blamed(args: str, target: str, word: str) -> None:
    plan = plan_of(args)
    assert plan.step is Step.USAGE
    assert isinstance(plan.error, Misread)
    assert (plan.error.target.name, plan.error.word, plan.error.second) == (target, word, None)
    assert plan.dialogs == refs(2043)


@pytest.mark.parametrize(
    ("args", "first", "second"),
    [
        ("2043 @anna @bob", "Anna Smirnova", "Bob Lee"),
        ("2043 anna bob", "Anna Smirnova", "Bob Lee"),
        ("2043 @анна #sup", "Anna Smirnova", "Support line"),
        ("2043 Anna Smirnova Bob Lee", "Anna Smirnova", "Bob Lee"),
        ("2043 Анна Смирнова Боб", "Anna Smirnova", "Bob Lee"),
    ],
)
def test_two_targets_are_named_both(args: str, first: str, second: str) -> None:
    plan = plan_of(args)
    assert plan.step is Step.USAGE
    assert isinstance(plan.error, Misread)
    assert plan.error.target.name == first
    assert plan.error.second is not None and plan.error.second.name == second


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ("foo @anna", "foo"),
        ("2043 foo @anna", "foo"),
        ("2043 dialog #support", "dialog"),
        ("-5 @anna", "-5"),
        ("20.43 @anna", "20.43"),
        ("20x4 anna", "20x4"),
        ("2043 диалог @анна", "диалог"),
    ],
)
def test_a_word_before_the_target_that_names_nobody_was_meant_as_a_dialog(
    args: str, word: str
) -> None:
    plan = plan_of(args)
    assert plan.step is Step.USAGE
    assert isinstance(plan.error, UsageError)
    assert (plan.error.reason, plan.error.token) == ("bad_dialog", word)


def test_a_misspelt_full_name_gets_did_you_mean() -> None:
    plan = plan_of("2043 Anan Smirnova")
    assert plan.step is Step.SUGGEST
    assert isinstance(plan.error, UnknownName)
    assert [t.name for t in plan.error.candidates] == ["Anna Smirnova"]


def test_a_reply_about_several_dialogs_keeps_the_full_name_for_after_the_choice() -> None:
    plan = plan_of("Anna Smirnova", replied=refs(2043, 2044))
    assert (plan.step, plan.target_word) == (Step.CHOOSE, "Anna Smirnova")
    assert DIRECTORY.resolve(plan.target_word).name == "Anna Smirnova"
    assert plan_of("Anna Smirnova please", replied=refs(2043, 2044)).step is Step.USAGE


def test_picker_hides_the_holder_and_the_queue_a_waiting_dialog_is_in() -> None:
    held_by_anna = Dialog(1, "x", 15, 3, None)
    waiting_in_support = Dialog(2, "y", 0, 3, None)
    names = [t.name for t in picker_targets(DIRECTORY, [held_by_anna])]
    assert names[:2] == ["Support line", "Sales <line>"]
    assert "Anna Smirnova" not in names
    assert "Support line" not in [t.name for t in picker_targets(DIRECTORY, [waiting_in_support])]
    both = picker_targets(DIRECTORY, [held_by_anna, waiting_in_support])
    assert len(both) == len(DIRECTORY.queues) + len(DIRECTORY.operators)


def test_pages() -> None:
    targets = picker_targets(DIRECTORY, [])
    first = picker_page(targets, 0, size=4)
    last = picker_page(targets, 99, size=4)
    assert (first.has_prev, first.has_next) == (False, True)
    assert (last.has_prev, last.has_next) == (True, False)
    assert last.number == (len(targets) - 1) // 4
    assert picker_page([], 0).targets == ()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def store_with(clock: Clock, expiry_s: float = 900) -> PendingStore:
    storage = SqliteStorage(":memory:", boot="test")
    await storage.open()
    return PendingStore(storage, expiry_s=expiry_s, clock=clock)


def anything(_: Pending) -> bool:
    """A tap any button of the message would fit."""
    return True


async def test_a_claim_is_taken_once() -> None:
    store = await store_with(Clock())
    await store.put((1, 1), Pending(Action.PICK, refs(2043), user_id=7))
    assert (await store.take((1, 1), anything)).dialogs == refs(2043)
    with pytest.raises(Taken):
        await store.take((1, 1), anything)
    await store.storage.close()


async def test_buttons_expire() -> None:
    clock = Clock()
    store = await store_with(clock, expiry_s=60)
    await store.put((1, 1), Pending(Action.PICK, refs(2043), user_id=7))
    clock.now += 61
    with pytest.raises(Expired):
        await store.take((1, 1), anything)
    with pytest.raises(NotOffered):  # no buttons at all is not "expired"
        await store.take((1, 2), anything)
    await store.storage.close()


async def test_everything_a_pending_action_holds_survives_storage() -> None:
    store = await store_with(Clock())
    looked = (Dialog(2043, "Ivan «VIP»", 16, 3, "whatsapp"),)
    anna = DIRECTORY.resolve("@anna")
    stored = Pending(
        Action.CONFIRM_TRANSFER,
        refs(2043, 2044),
        7,
        target=anna,
        looked=looked,
        target_word="@anna",
    )
    await store.put((1, 5), stored)
    again = await store.get((1, 5))
    assert again == stored
    await store.remember((1, 5), refs(2043))
    assert await store.about((1, 5)) == refs(2043)
    assert await store.about((1, 6)) == ()
    await store.storage.close()
