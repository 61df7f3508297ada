"""The classes aiogram reads Telegram's answers with outlive garbage collections."""

from __future__ import annotations

import gc
import json
import weakref
from typing import Any

import pytest
from aiogram import Bot
from aiogram.methods import AnswerCallbackQuery, EditMessageText, GetUpdates, SendMessage
from aiogram.methods.base import Response, TelegramMethod

import bot.app  # noqa: F401  (it holds them)

MESSAGE = {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}, "text": "x"}
ANSWERS: list[tuple[TelegramMethod[Any], object]] = [
    (GetUpdates(), []),
    (SendMessage(chat_id=1, text="x"), MESSAGE),
    (EditMessageText(chat_id=1, message_id=1, text="y"), MESSAGE),
    (AnswerCallbackQuery(callback_query_id="1"), True),
]


@pytest.mark.parametrize(("method", "result"), ANSWERS, ids=lambda v: type(v).__name__)
def test_an_answer_class_is_not_built_again_after_a_collection(
    method: TelegramMethod[Any], result: object
) -> None:
    # aiogram reads each answer as Response[...], which pydantic caches weakly: unless the bot
    # holds the class, a collection frees it and the next answer builds it again (about 4 ms)
    telegram = Bot("4242:answer-types-token")
    body = json.dumps({"ok": True, "result": result})
    telegram.session.check_response(telegram, method, 200, body)  # as aiogram reads an answer
    kept = weakref.ref(Response[method.__returning__])  # type: ignore[name-defined]
    gc.collect()
    assert kept() is not None
