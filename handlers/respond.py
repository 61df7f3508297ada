"""How the bot answers: in place in private chats, as a reply in groups, split when long."""

from __future__ import annotations

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import InlineKeyboardMarkup, Message

from bot.replies import split_message


async def respond(
    message: Message, text: str, markup: InlineKeyboardMarkup | None = None
) -> list[Message]:
    """Answer ``message``; in a group, reply so the answer sits under the command.

    A text longer than Telegram allows goes out as several messages, cut between lines (a
    single line too long for a message is shortened, see :func:`bot.replies.split_message`);
    ``markup`` goes on the last one, under the whole answer. Returns what was sent.
    """
    chunks = split_message(text)
    sent = []
    for i, chunk in enumerate(chunks):
        keyboard = markup if i == len(chunks) - 1 else None
        if message.chat.type == "private":
            sent.append(await message.answer(chunk, reply_markup=keyboard))
        else:
            sent.append(await message.reply(chunk, reply_markup=keyboard))
    return sent


async def replace(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Turn a message of the bot (its buttons gone unless ``markup``) into ``text``.

    A long ``text`` continues in new messages after the edited one; ``markup`` stays on the
    edited message, the one a tap's pending state is kept under.
    """
    first, *rest = split_message(text)
    try:
        await message.edit_text(first, reply_markup=markup)
    except TelegramBadRequest as err:
        # it reads so already ("Try again" brought the same answer): the edit is done, and
        # the rest of the answer must still follow
        if "message is not modified" not in err.message:
            raise
    for chunk in rest:
        await message.answer(chunk)
