"""The inbox's task around each update: what it does when even the errors router fails."""

from __future__ import annotations

import gc
import logging
from typing import Any, cast

import pytest
from aiogram import Dispatcher
from aiogram.types import TelegramObject, Update

from bot.inbox import Delivery, Inbox
from bot.storage import Mark, Storage


async def test_a_failure_no_error_handler_answers_is_logged_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The errors router answers a failure; when nothing does (or it fails too), the failure
    is logged with the update, not left in the task for asyncio to warn about when it is
    collected; the update's mark stays open for the next run."""
    inbox = Inbox(Dispatcher(), cast(Storage, object()))  # no error handlers; storage unused

    async def broken(event: TelegramObject, data: dict[str, Any]) -> None:
        raise RuntimeError("a bug")

    inbox.carry_on(broken, Update(update_id=7), {}, Delivery("u:1:7", Mark.NEW))
    assert await inbox.wait_idle(5)
    gc.collect()
    failed = [r for r in caplog.records if "update 7 failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.ERROR and failed[0].exc_info is not None
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
