"""How the bot answers a message: in place in private chats, as a reply in groups."""

from __future__ import annotations

from aiogram.types import Message

from bot.replies import split_message


async def respond(message: Message, text: str) -> None:
    """Answer ``message``; in a group, reply so the answer sits under the command.

    A text longer than Telegram allows goes out as several messages.
    """
    for chunk in split_message(text):
        if message.chat.type == "private":
            await message.answer(chunk)
        else:
            await message.reply(chunk)
