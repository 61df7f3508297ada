"""Inline keyboards and their callback data (aiogram ``CallbackData`` factories).

Callback data carries only small IDs; what they act on is kept by :class:`PendingStore`
under the message the keyboard is on. What a tap brings back comes from the user's phone and
may be anything (a modified client): :class:`Exact` matches only data the bot itself could
have made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from aiogram.filters import Filter
from aiogram.filters.callback_data import MAX_CALLBACK_LENGTH, CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.bitrix24.client import Dialog
from bot.directory import Kind, Target
from bot.flow import Page
from bot.messages import Lang
from bot.presence import Online
from bot.replies import Replies


class TargetTap(CallbackData, prefix="t"):
    """A target was chosen (picker or "did you mean")."""

    kind: Literal["o", "q"]  # operator, queue; anything else is not a button of ours
    id: int


class PageTap(CallbackData, prefix="p"):
    """Another page of the picker, or of the people a name fits."""

    page: int


class DialogTap(CallbackData, prefix="d"):
    """One of several dialogs was chosen."""

    chat: int


class ConfirmTap(CallbackData, prefix="ok"):
    """The confirming tap of a bulk transfer or a finish."""


class CancelTap(CallbackData, prefix="no"):
    """Cancel: nothing happens."""


class RetryTap(CallbackData, prefix="re"):
    """Try again what did not move."""


Tap = TypeVar("Tap", bound=CallbackData)


def parse(tap: type[Tap], data: str | None) -> Tap | None:
    """``data`` as a ``tap``, if it is exactly what the bot would have put on such a button:
    at most 64 bytes, and packing back to the same string (no padding, no leading zeros, no
    other spelling of a number); else None."""
    if data is None or len(data.encode()) > MAX_CALLBACK_LENGTH:
        return None  # before parsing: 10 KB of junk is not even split
    try:
        parsed = tap.unpack(data)
        return parsed if parsed.pack() == data else None
    except (TypeError, ValueError):  # wrong prefix or arity, or a field pydantic refuses
        return None


class Exact(Filter):
    """The taps whose data :func:`parse` accepts as ``tap``, handed to the handler as
    ``callback_data``: ``Exact(TargetTap)`` where aiogram has ``TargetTap.filter()``, which
    takes any spelling pydantic can read (``t:o:0015``, 10 KB long)."""

    def __init__(self, tap: type[CallbackData]) -> None:
        self.tap = tap

    async def __call__(self, query: CallbackQuery) -> Literal[False] | dict[str, Any]:
        """The parsed data, or False."""
        parsed = parse(self.tap, query.data)
        return False if parsed is None else {"callback_data": parsed}


def target_tap(target: Target) -> TargetTap:
    """The callback data that chooses ``target``."""
    return TargetTap(kind="o" if target.kind is Kind.OPERATOR else "q", id=target.bitrix_id)


def tapped_kind(data: TargetTap) -> Kind:
    """The kind of target a :class:`TargetTap` names."""
    return Kind.OPERATOR if data.kind == "o" else Kind.QUEUE


def picker(
    page: Page,
    replies: Replies,
    lang: Lang,
    online: Online | None = None,
    *,
    next_key: str = "button.next",
) -> InlineKeyboardMarkup:
    """Targets two a row (operators marked online or offline when known), then Back/Next as
    needed (``next_key`` names the forward button), then Cancel."""
    text = replies.messages.template
    builder = InlineKeyboardBuilder()
    for target in page.targets:
        builder.button(text=_label(target, replies, online), callback_data=target_tap(target))
    builder.adjust(2)
    nav = InlineKeyboardBuilder()
    if page.has_prev:
        nav.button(text=text("button.back", lang), callback_data=PageTap(page=page.number - 1))
    if page.has_next:
        nav.button(text=text(next_key, lang), callback_data=PageTap(page=page.number + 1))
    builder.attach(nav)
    builder.row()
    cancel = InlineKeyboardBuilder()
    cancel.button(text=text("button.cancel", lang), callback_data=CancelTap())
    builder.attach(cancel)
    return builder.as_markup()


def choices(
    page: Page, replies: Replies, lang: Lang, online: Online | None = None
) -> InlineKeyboardMarkup:
    """The people a name fits, a page of them: as the picker, with "More »" to go on."""
    return picker(page, replies, lang, online, next_key="button.more")


def suggestions(
    targets: Sequence[Target], replies: Replies, lang: Lang, online: Online | None = None
) -> InlineKeyboardMarkup:
    """One button per suggested target (marked as the picker's are), then Cancel."""
    builder = InlineKeyboardBuilder()
    for target in targets:
        builder.button(text=_label(target, replies, online), callback_data=target_tap(target))
    builder.button(text=replies.messages.template("button.cancel", lang), callback_data=CancelTap())
    builder.adjust(1)
    return builder.as_markup()


def _label(target: Target, replies: Replies, online: Online | None) -> str:
    """A target's button label, with its online mark when known."""
    known = None if online is None else online.get(target.bitrix_id)
    return replies.button(target, known if target.kind is Kind.OPERATOR else None)


def confirm(action_key: str, replies: Replies, lang: Lang) -> InlineKeyboardMarkup:
    """The confirming button (``button.transfer`` / ``button.finish``) and Cancel."""
    builder = InlineKeyboardBuilder()
    builder.button(text=replies.messages.template(action_key, lang), callback_data=ConfirmTap())
    builder.button(text=replies.messages.template("button.cancel", lang), callback_data=CancelTap())
    builder.adjust(2)
    return builder.as_markup()


def dialogs(looked: Sequence[Dialog], replies: Replies, lang: Lang) -> InlineKeyboardMarkup:
    """One button per dialog, then Cancel."""
    builder = InlineKeyboardBuilder()
    for dialog in looked:
        builder.button(text=replies.label(dialog), callback_data=DialogTap(chat=dialog.chat_id))
    builder.button(text=replies.messages.template("button.cancel", lang), callback_data=CancelTap())
    builder.adjust(1)
    return builder.as_markup()


def retry(replies: Replies, lang: Lang) -> InlineKeyboardMarkup:
    """The one "Try again" button under a result where something did not move."""
    builder = InlineKeyboardBuilder()
    builder.button(text=replies.messages.template("button.retry", lang), callback_data=RetryTap())
    return builder.as_markup()
