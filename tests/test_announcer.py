"""Team-chat announcements: immediate when the chat is quiet, coalesced in a burst."""

from __future__ import annotations

import asyncio

from bot.announcer import Announcer
from bot.command import DialogKind, DialogRef

CHAT = -100


class Chat:
    """A poster that keeps the chat's messages, as Telegram would show them."""

    def __init__(self, fail: bool = False) -> None:
        self.messages: dict[int, str] = {}
        self.sends = 0
        self.edits = 0
        self.fail = fail

    async def send(self, chat_id: int, text: str) -> int:
        if self.fail:
            raise RuntimeError("Forbidden: bot was kicked")
        self.sends += 1
        self.messages[self.sends] = text
        return self.sends

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        self.edits += 1
        self.messages[message_id] = text


def ref(n: int) -> tuple[DialogRef, ...]:
    return (DialogRef(DialogKind.CHAT, n),)


async def test_a_quiet_chat_gets_each_announcement_as_a_new_message() -> None:
    chat = Chat()
    announcer = Announcer(CHAT, chat, burst=3)
    assert await announcer.announce(["a"], ref(1))
    assert await announcer.announce(["b"], ref(2))
    assert (chat.sends, chat.edits) == (2, 0)
    await announcer.close()


async def test_a_burst_is_coalesced_into_a_growing_message() -> None:
    chat = Chat()
    remembered: dict[int, tuple[DialogRef, ...]] = {}

    async def remember(message_id: int, refs: tuple[DialogRef, ...]) -> None:
        remembered[message_id] = refs

    announcer = Announcer(CHAT, chat, burst=1, remember=remember)
    assert await announcer.announce(["line 0"], ref(0))  # posted at once
    later = [announcer.announce([f"line {n}"], ref(n)) for n in range(1, 6)]
    assert all(await asyncio.gather(*later))
    assert (chat.sends, chat.edits) == (1, 1), "one message, grown once after the pause"
    assert chat.messages[1].splitlines() == [f"line {n}" for n in range(6)]
    assert [r.number for r in remembered[1]] == list(range(6))
    await announcer.close()


async def test_lines_beyond_the_length_limit_start_a_new_message() -> None:
    chat = Chat()
    announcer = Announcer(CHAT, chat, limit=25)
    assert await announcer.announce([f"line number {n}" for n in range(4)], ())
    assert all(len(text) <= 25 for text in chat.messages.values())
    assert "\n".join(chat.messages.values()).splitlines() == [f"line number {n}" for n in range(4)]
    await announcer.close()


async def test_a_failed_post_is_reported_and_the_next_one_still_goes() -> None:
    chat = Chat(fail=True)
    announcer = Announcer(CHAT, chat, burst=5)
    assert await announcer.announce(["a"], ref(1)) is False
    chat.fail = False
    assert await announcer.announce(["b"], ref(2)) is True
    assert chat.messages == {1: "b"}
    await announcer.close()


async def test_the_minute_budget_holds() -> None:
    chat = Chat()
    announcer = Announcer(CHAT, chat, per_minute=2, burst=10)
    await announcer.announce(["a"], ())
    await announcer.announce(["b"], ())
    pending = announcer.announce(["c"], ())  # would be the third post within a minute
    await asyncio.sleep(0.3)
    assert not pending.done()  # type: ignore[attr-defined]
    assert chat.sends == 2
    await announcer.close(limit_s=0.1)
