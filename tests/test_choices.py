"""A name that fits several, online marks and the offline question — without Telegram:
natural order, pages of six, what a page tap may show, the buttons and the texts."""

from __future__ import annotations

import random

import pytest

from bot.bitrix24.client import Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import DialogKind, DialogRef
from bot.config import parse_config
from bot.directory import AmbiguousName, Directory, Kind, Target, UnknownName
from bot.flow import CHOICE_SIZE, PAGE_SIZE, choices, natural_key, offline_first, picker_page
from bot.messages import Messages
from bot.pending import Action, Pending
from bot.replies import Replies
from handlers import keyboards
from tests.harness import CONFIG_YAML


def operators_yaml(count: int) -> str:
    return "".join(
        f"  - {{key: op{i}, bitrix_id: {100 + i}, name: Operator {i}}}\n"
        for i in range(1, count + 1)
    )


CROWD = CONFIG_YAML.replace("queues:\n", operators_yaml(18) + "queues:\n")
DIRECTORY = Directory.from_config(parse_config(CROWD, {}))
REPLIES = Replies(Messages(), DIRECTORY)
ANNA = Target(Kind.OPERATOR, 15, "Anna Smirnova", "anna")
BOB = Target(Kind.OPERATOR, 16, "Bob Lee", "bob")
SUPPORT = Target(Kind.QUEUE, 3, "Support line", "support")


def refs(*numbers: int) -> tuple[DialogRef, ...]:
    return tuple(DialogRef(DialogKind.CHAT, n) for n in numbers)


def dialog(chat_id: int = 2043, owner: int = 15, *, session: int | None = 7) -> Dialog:
    return Dialog(chat_id, "Ivan — WhatsApp", owner, 3, "whatsapp", session)


# ---- natural order ------------------------------------------------------------------------


def test_numbers_sort_as_numbers() -> None:
    names = ["op10", "op2", "op1", "Op11", "op", "op1a", "op01", "op100", "ap3"]
    assert sorted(names, key=natural_key) == [
        "ap3",
        "op",
        "op01",  # the same number as op1: a fixed order, by the text
        "op1",
        "op1a",
        "op2",
        "op10",
        "Op11",  # case aside
        "op100",
    ]


def test_natural_key_takes_any_text() -> None:
    rng = random.Random(12)
    alphabet = "aB9 0-Ж٣."  # letters, digits of other scripts, separators
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(500)]
    ordered = sorted(words, key=natural_key)
    assert sorted(ordered, key=natural_key) == ordered  # a total order: no TypeError, stable
    assert natural_key("Operator 2") < natural_key("Operator 10")


def test_a_name_that_fits_eighteen_is_offered_in_natural_order() -> None:
    with pytest.raises(AmbiguousName) as caught:
        DIRECTORY.resolve("Operator")
    offered = choices(caught.value.candidates)
    assert [t.name for t in offered] == [f"Operator {i}" for i in range(1, 19)]


def test_queues_come_before_people_of_the_same_name() -> None:
    same = Target(Kind.OPERATOR, 99, "Support line")
    assert choices([same, SUPPORT]) == (SUPPORT, same)


# ---- pages of six -------------------------------------------------------------------------


def test_a_name_that_fits_eighteen_pages_by_six() -> None:
    offered = _eighteen()
    pending = Pending(Action.AMBIGUOUS, refs(2043), 7, offered=offered)
    first, second, third = (pending.page(n) for n in range(3))
    assert [t.name for t in first.targets] == [f"Operator {i}" for i in range(1, 7)]
    assert [t.name for t in second.targets] == [f"Operator {i}" for i in range(7, 13)]
    assert [t.name for t in third.targets] == [f"Operator {i}" for i in range(13, 19)]
    assert (first.has_prev, first.has_next, third.has_next) == (False, True, False)
    assert [pending.page_offered(n) for n in (-1, 0, 1, 2, 3)] == [False, True, True, True, False]
    # the picker keeps its own pages of eight
    picker = Pending(Action.PICK, refs(2043), 7, offered=offered)
    assert len(picker.page(0).targets) == PAGE_SIZE and picker.page_offered(2) is True
    assert picker.page_offered(3) is False
    # "did you mean" has no pages, and a target not offered is not taken
    suggest = Pending(Action.SUGGEST, refs(2043), 7, offered=offered[:3])
    assert suggest.page_offered(0) is False
    assert pending.target_offered(Kind.OPERATOR, 118) is not None
    assert pending.target_offered(Kind.OPERATOR, 15) is None


def _eighteen() -> tuple[Target, ...]:
    with pytest.raises(AmbiguousName) as caught:
        DIRECTORY.resolve("Operator")
    return choices(caught.value.candidates)


def test_the_choice_keyboard_six_targets_more_and_cancel() -> None:
    offered = _eighteen()
    online = {101: True, 102: False}
    markup = keyboards.choices(picker_page(offered, 0, CHOICE_SIZE), REPLIES, "en", online)
    rows = [[b.text for b in row] for row in markup.inline_keyboard]
    assert rows == [
        ["🟢 Operator 1", "⚪ Operator 2"],
        ["Operator 3", "Operator 4"],  # not known: no mark
        ["Operator 5", "Operator 6"],
        ["More »"],
        ["Cancel"],
    ]
    assert markup.inline_keyboard[3][0].callback_data == "p:1"
    last = keyboards.choices(picker_page(offered, 2, CHOICE_SIZE), REPLIES, "ru")
    assert [b.text for row in last.inline_keyboard for b in row][-2:] == ["« Назад", "Отмена"]
    middle = keyboards.choices(picker_page(offered, 1, CHOICE_SIZE), REPLIES, "ru")
    assert [b.text for b in middle.inline_keyboard[3]] == ["« Назад", "Ещё »"]


def test_marks_are_for_operators_only() -> None:
    page = picker_page([SUPPORT, ANNA, BOB], 0)
    online = {3: False, 15: True, 16: False}  # a queue's ID that is also a user's
    labels = [
        b.text for row in keyboards.picker(page, REPLIES, "en", online).inline_keyboard for b in row
    ]
    assert labels == ["# Support line", "🟢 Anna Smirnova", "⚪ Bob Lee", "Cancel"]
    suggest = keyboards.suggestions([ANNA, BOB], REPLIES, "en", {15: True})
    assert [b.text for row in suggest.inline_keyboard for b in row] == [
        "🟢 Anna Smirnova",
        "Bob Lee",
        "Cancel",
    ]


# ---- the texts ----------------------------------------------------------------------------


def test_a_name_that_fits_several_is_one_short_line() -> None:
    error = AmbiguousName("Operator", _eighteen())
    assert REPLIES.unresolved(error, "en") == "«Operator» fits 18 people. Pick one:"
    assert REPLIES.unresolved(error, "ru") == (
        "Под «Operator» подходят несколько сотрудников (18). Кого выбрать?"
    )
    mixed = AmbiguousName("support", (SUPPORT, Target(Kind.OPERATOR, 99, "Support Bot")))
    assert REPLIES.unresolved(mixed, "en") == "«support» fits 2 names. Pick one:"
    assert REPLIES.unresolved(mixed, "ru") == "Под «support» подходят несколько имён (2). Выберите:"


def test_did_you_mean_keeps_its_look() -> None:
    error = UnknownName("@ana", (ANNA,))
    assert REPLIES.unresolved(error, "en") == (
        "I don't know «@ana». Did you mean <code>@anna</code> (Anna Smirnova)?"
    )


def chat(number: int) -> DialogRef:
    return DialogRef(DialogKind.CHAT, number)


def test_the_offline_question() -> None:
    one = REPLIES.offline([chat(2043)], [dialog()], BOB, "en")
    assert one == "⚪ Bob Lee is offline. Transfer dialog 2043 «Ivan — WhatsApp» anyway?"
    assert REPLIES.offline([chat(2043)], [dialog()], BOB, "ru") == (
        "⚪ Оператор Bob Lee не в сети. Всё равно передать диалог 2043 «Ivan — WhatsApp»?"
    )
    both = [chat(2043), chat(2044)]
    two = REPLIES.offline(both, [dialog(), dialog(2044)], BOB, "en").splitlines()
    assert two[0] == "⚪ Bob Lee is offline. Transfer 2 dialogs anyway?"
    assert len(two) == 3
    lost = BitrixError("ACCESS_ERROR", "", 400, "imopenlines.dialog.get")
    half = REPLIES.offline([chat(9999), chat(2043)], [lost, dialog()], BOB, "en").splitlines()
    assert half[0].startswith("⚪ Bob Lee is offline. Transfer dialog 2043")
    assert half[1:] == REPLIES.look_lines([chat(9999)], [lost], "en")
    assert half[1].startswith("❌ Dialog 9999: "), "the dialog that cannot be seen is named"
    assert REPLIES.offline_note(BOB, "ru") == "⚪ Оператор Bob Lee не в сети."


# ---- when to ask --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "looks", "online", "asks"),
    [
        (BOB, [dialog()], {16: False}, True),
        (BOB, [dialog()], {16: True}, False),
        (BOB, [dialog()], {}, False),  # not known: never asked
        (BOB, [dialog()], {15: False}, False),  # someone else is offline
        (SUPPORT, [dialog()], {3: False}, False),  # queues are never offline
        (None, [dialog()], {16: False}, False),
        (BOB, [dialog(owner=16)], {16: False}, False),  # with Bob already: only reported
        (BOB, [dialog(session=0)], {16: False}, False),  # finished: only reported
        (BOB, [BitrixError("ACCESS_ERROR")], {16: False}, False),  # nothing to move
        (BOB, [dialog(owner=16), dialog(2044)], {16: False}, True),
    ],
)
def test_offline_first(
    target: Target | None,
    looks: list[Dialog | BitrixError],
    online: dict[int, bool],
    asks: bool,
) -> None:
    assert offline_first(target, looks, online) is asks
