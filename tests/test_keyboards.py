"""Callback data stays within Telegram's 64 bytes, whatever the names and IDs."""

from __future__ import annotations

import pytest

from bot.config import parse_config
from bot.directory import Directory, Kind, Target
from bot.flow import PAGE_SIZE, picker_page
from bot.messages import Messages
from bot.replies import Replies
from handlers import keyboards
from handlers.keyboards import CancelTap, ConfirmTap, DialogTap, PageTap, TargetTap

BIGGEST_ID = 2**31 - 1
LONG_NAME = "Анна-Мария Константинопольская-Щедрина " * 4 + "<b>&"


@pytest.mark.parametrize(
    "data",
    [
        TargetTap(kind="o", id=BIGGEST_ID),
        TargetTap(kind="q", id=BIGGEST_ID),
        PageTap(page=10_000),
        DialogTap(chat=BIGGEST_ID),
        ConfirmTap(),
        CancelTap(),
    ],
)
def test_callback_data_fits_in_64_bytes(data: object) -> None:
    packed = data.pack()  # type: ignore[attr-defined]
    assert len(packed.encode()) <= 64
    assert type(data).unpack(packed) == data  # type: ignore[attr-defined]


def test_keyboards_with_long_names_carry_only_ids() -> None:
    operators = "\n".join(
        f'  - {{key: op{i}, bitrix_id: {BIGGEST_ID - i}, name: "{LONG_NAME}{i}"}}'
        for i in range(30)
    )
    config = parse_config(f"operators:\n{operators}\n", {})
    directory = Directory.from_config(config)
    replies = Replies(Messages(), directory)
    page = picker_page(list(directory.operators), 0)
    markup = keyboards.picker(page, replies, "ru")
    buttons = [b for row in markup.inline_keyboard for b in row]
    assert len(buttons) == PAGE_SIZE + 2  # targets, Next, Cancel
    for button in buttons:
        assert button.callback_data is not None
        assert len(button.callback_data.encode()) <= 64
        assert len(button.text) <= 40
    assert buttons[0].text.endswith("…")


def test_target_tap_round_trip() -> None:
    target = Target(Kind.QUEUE, 7, "Night line", "night")
    data = keyboards.target_tap(target)
    assert data.pack() == "t:q:7"
    assert keyboards.tapped_kind(TargetTap.unpack(data.pack())) is Kind.QUEUE
