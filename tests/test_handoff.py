"""The transfer workflow against the portal simulator over real HTTP, without Telegram."""

from __future__ import annotations

import asyncio

from bot.bitrix24.client import BitrixClient
from bot.command import DialogKind, DialogRef
from bot.directory import Kind, Target
from bot.handoff import Handoff, Status
from bot.sandbox.portal import Fault, PortalSimulator
from tests.conftest import ANNA, bitrix_settings

TO_ANNA = Target(Kind.OPERATOR, ANNA, "Anna Smirnova", "anna")
DIALOG = DialogRef(DialogKind.CHAT, 2043)


async def test_a_look_taken_before_another_move_is_not_trusted(portal: PortalSimulator) -> None:
    # B reads the dialog (Bob's) but its answer is slow; meanwhile A moves it to Anna.
    portal.inject("imopenlines.dialog.get", Fault.delay(0.5, apply=True))
    async with BitrixClient(bitrix_settings(portal.url)) as client:
        handoff = Handoff(client)
        b = asyncio.create_task(handoff.transfer([DIALOG], TO_ANNA))
        async with asyncio.timeout(5):
            while not portal.calls_to("imopenlines.dialog.get"):  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.01)
        [a] = await handoff.transfer([DIALOG], TO_ANNA)
        [b_outcome] = await b
    assert a.status is Status.MOVED
    assert b_outcome.status is Status.ALREADY, b_outcome
    assert len(portal.calls_to("imopenlines.operator.transfer")) == 1


async def test_session_and_chat_naming_one_dialog_move_it_once(portal: PortalSimulator) -> None:
    async with BitrixClient(bitrix_settings(portal.url)) as client:
        outcomes = await Handoff(client).transfer(
            [DIALOG, DialogRef(DialogKind.SESSION, 3567)], TO_ANNA
        )
    assert [o.status for o in outcomes] == [Status.MOVED, Status.DUPLICATE]
    assert len(portal.calls_to("imopenlines.operator.transfer")) == 1
