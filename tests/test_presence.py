"""Who is online (bot/presence.py): the real Bitrix24 client asking the portal simulator over
HTTP, with a hand-driven clock for the minute the statuses are kept."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.bitrix24.client import BitrixClient
from bot.directory import Kind, Target
from bot.presence import FRESH_S, NO_SCOPE_S, Presence
from bot.sandbox.portal import Fault, SimOperator
from tests.conftest import ANNA, BOB, IRINA, PAVEL, WEBHOOK_CODE, bitrix_settings, make_portal

USER_GET = "user.get"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def op(user_id: int) -> Target:
    return Target(Kind.OPERATOR, user_id, f"user {user_id}")


QUEUE = Target(Kind.QUEUE, 3, "Support line", "support")


async def test_one_call_for_the_ids_shown_then_a_minute_of_none() -> None:
    clock = Clock()
    async with make_portal() as portal, BitrixClient(bitrix_settings(portal.url)) as client:
        portal.operators[BOB].online = False
        presence = Presence(client, clock=clock)
        targets = [QUEUE, op(ANNA), op(BOB), op(PAVEL), op(ANNA)]
        assert await presence.of(targets) == {ANNA: True, BOB: False, PAVEL: False}
        [call] = portal.calls_to(USER_GET)
        assert call.params == {"FILTER": {"ID": [ANNA, BOB, PAVEL]}}, "queues are not asked"

        portal.operators[BOB].online = True
        clock.now += FRESH_S - 1
        assert await presence.of(targets) == {ANNA: True, BOB: False, PAVEL: False}
        assert len(portal.calls_to(USER_GET)) == 1, "kept for a minute"
        # a new face within the minute: only they are asked about
        assert await presence.of([op(ANNA), op(IRINA)]) == {ANNA: True, IRINA: True}
        assert portal.calls_to(USER_GET)[-1].params == {"FILTER": {"ID": [IRINA]}}

        clock.now += 2
        assert (await presence.of(targets))[BOB] is True, "asked again after the minute"
        assert len(portal.calls_to(USER_GET)) == 3
        assert await presence.of([QUEUE]) == {}
        assert len(portal.calls_to(USER_GET)) == 3


async def test_someone_the_portal_does_not_list_stays_unmarked_and_is_not_asked_again() -> None:
    clock = Clock()
    async with make_portal() as portal, BitrixClient(bitrix_settings(portal.url)) as client:
        presence = Presence(client, clock=clock)
        assert await presence.of([op(ANNA), op(404)]) == {ANNA: True}
        assert await presence.of([op(404)]) == {}
        assert len(portal.calls_to(USER_GET)) == 1


async def test_at_most_fifty_ids_a_call_the_first_ones_first() -> None:
    extra = [SimOperator(100 + i, f"Operator {i}") for i in range(70)]
    async with make_portal() as portal, BitrixClient(bitrix_settings(portal.url)) as client:
        portal.operators.update({o.id: o for o in extra})
        portal.operators[101].online = False
        presence = Presence(client, clock=Clock())
        marks = await presence.of([op(o.id) for o in extra])
        assert len(marks) == 50 and marks[100] is True and marks[101] is False
        [call] = portal.calls_to(USER_GET)
        assert call.params["FILTER"]["ID"] == list(range(100, 150))


async def test_without_the_user_scope_no_marks_one_warning_and_quiet_for_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.presence")
    clock = Clock()
    portal = make_portal(scopes=["imopenlines"])
    async with portal, BitrixClient(bitrix_settings(portal.url)) as client:
        presence = Presence(client, clock=clock)
        assert await presence.of([op(ANNA)]) == {}
        assert portal.calls_to(USER_GET)[0].status == 403
        for _ in range(3):
            assert await presence.of([op(BOB)]) == {}
        assert len(portal.calls_to(USER_GET)) == 1, "not asked again at every command"
        clock.now += NO_SCOPE_S + 1
        assert await presence.of([op(BOB)]) == {}
        assert len(portal.calls_to(USER_GET)) == 2
        portal.scopes.add("user")  # the admin ticks the scope
        clock.now += NO_SCOPE_S + 1
        assert await presence.of([op(BOB)]) == {BOB: True}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "said once"
    assert "'user' scope" in warnings[0].getMessage()
    assert all(WEBHOOK_CODE not in r.getMessage() for r in caplog.records)


async def test_a_failing_portal_gives_no_marks_and_is_left_alone_for_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.presence")
    clock = Clock()
    async with make_portal() as portal, BitrixClient(bitrix_settings(portal.url)) as client:
        portal.inject(USER_GET, Fault.error("ACCESS_DENIED"), times=5)
        presence = Presence(client, clock=clock)
        assert await presence.of([op(ANNA)]) == {}
        assert await presence.of([op(ANNA)]) == {}
        assert len(portal.calls_to(USER_GET)) == 1
        clock.now += FRESH_S + 1
        assert await presence.of([op(ANNA)]) == {}
        assert len(portal.calls_to(USER_GET)) == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.presence"]
    assert lines == ["online marks skipped for now: user.get ACCESS_DENIED (HTTP 403)"]


async def test_a_slow_portal_does_not_hold_the_command_up() -> None:
    clock = Clock()
    async with make_portal() as portal:
        # the portal would say Anna is online, 5 s late: waited for, she would be marked
        portal.inject(USER_GET, Fault.delay(5, apply=True))
        async with BitrixClient(bitrix_settings(portal.url, timeout_s=10.0)) as client:
            presence = Presence(client, clock=clock, wait_s=0.3)
            assert await presence.of([op(ANNA)]) == {}
            # the next command within the minute does not wait again
            assert await presence.of([op(ANNA)]) == {}
            assert len(portal.calls_to(USER_GET)) == 1


async def test_an_answer_that_is_no_list_of_users_gives_no_marks() -> None:
    async with make_portal() as portal, BitrixClient(bitrix_settings(portal.url)) as client:
        portal.inject(USER_GET, Fault.json(200, {"result": {"ID": "15"}}))
        presence = Presence(client, clock=Clock())
        assert await presence.of([op(ANNA)]) == {}


async def test_asked_together_with_a_look_it_travels_in_the_same_batch() -> None:
    # a batch command is a query string: the ID list must arrive as a list, not as "[15, 16]"
    async with make_portal() as portal, BitrixClient(bitrix_settings(portal.url)) as client:
        portal.operators[BOB].online = False
        presence = Presence(client, clock=Clock())
        look = client.dialog(2043)
        marks, dialog = await asyncio.gather(presence.of([op(ANNA), op(BOB)]), look)
        assert marks == {ANNA: True, BOB: False} and dialog.chat_id == 2043
        assert [c.method for c in portal.calls if not c.in_batch] == ["batch"]
        [call] = portal.calls_to(USER_GET)
        assert call.in_batch and call.params == {"FILTER": {"ID": {"0": "15", "1": "16"}}}
