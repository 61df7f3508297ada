"""The transfer workflow against the portal simulator over real HTTP, without Telegram."""

from __future__ import annotations

import asyncio

from bot.bitrix24.client import BitrixClient, Seen
from bot.command import DialogKind, DialogRef
from bot.directory import Kind, Target
from bot.handoff import Handoff, Status
from bot.sandbox.portal import Fault, PortalSimulator
from tests.conftest import ANNA, IRINA, bitrix_settings

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


async def test_a_dialog_is_never_moved_by_two_commands_at_once(portal: PortalSimulator) -> None:
    """A and B name one dialog together: B waits for A. C comes while B's transfer is out,
    and waits for B in turn, though no one but B holds the dialog's lock by then (its first
    holder, A, is done). After them, no lock is kept."""
    portal.inject(
        "batch", Fault.delay(0.3, apply=True), times=3, carrying="imopenlines.operator.transfer"
    )
    to_irina = Target(Kind.OPERATOR, IRINA, "Irina Volkova")
    async with BitrixClient(bitrix_settings(portal.url)) as client:
        handoff = Handoff(client)
        started = in_flight = most = 0
        real = client.transfer

        async def transfer(*args: object, **kwargs: object) -> Seen:
            nonlocal started, in_flight, most
            started += 1
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await real(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                in_flight -= 1

        client.transfer = transfer  # type: ignore[method-assign]
        a = asyncio.create_task(handoff.transfer([DIALOG], TO_ANNA))
        b = asyncio.create_task(handoff.transfer([DIALOG], to_irina))
        async with asyncio.timeout(5):
            while started < 2:  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.01)
        [c] = await handoff.transfer([DIALOG], TO_ANNA)
        outcomes = [*await a, *await b, c]
    assert most == 1, "two transfers of one dialog were out at once"
    assert [o.status for o in outcomes] == [Status.MOVED] * 3
    assert portal.dialogs[2043].owner == ANNA
    assert len(handoff._locks) == 0
