"""The Bitrix24 client against a real HTTP server on 127.0.0.1 (the portal simulator)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket

import pytest

from bot.bitrix24 import batching
from bot.bitrix24.client import BitrixClient, Seen
from bot.bitrix24.codes import KNOWN_CODES, OURS, KnownCode
from bot.bitrix24.errors import BitrixError
from bot.command import DialogKind, DialogRef
from bot.directory import Kind, Target
from bot.sandbox.portal import Fault, PortalSimulator, SimDialog
from tests.conftest import (
    ANNA,
    BOB,
    IRINA,
    PAVEL,
    SALES,
    SUPPORT,
    WEBHOOK_CODE,
    bitrix_settings,
    make_portal,
)

TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"
FINISH = "imopenlines.operator.another.finish"

TO_ANNA = Target(Kind.OPERATOR, ANNA, "Anna Smirnova", "anna")
TO_SALES = Target(Kind.QUEUE, SALES, "Sales line", "sales")


def client_for(portal: PortalSimulator, **overrides: object) -> BitrixClient:
    return BitrixClient(bitrix_settings(portal.url, **overrides))


def sent(portal: PortalSimulator, method: str) -> list[dict[str, object]]:
    """The parameters of each call of ``method`` (numbers in a batch arrive as text)."""
    return [
        {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in c.params.items()}
        for c in portal.calls_to(method)
    ]


def applied(portal: PortalSimulator, method: str) -> int:
    return sum(1 for call in portal.calls_to(method) if call.applied and call.status == 200)


async def test_dialog_by_chat_id_and_by_session(portal: PortalSimulator) -> None:
    async with client_for(portal) as client:
        by_chat = await client.dialog(DialogRef(DialogKind.CHAT, 2043))
        by_session = await client.dialog(DialogRef(DialogKind.SESSION, 3567))
    assert by_chat == by_session
    assert (by_chat.chat_id, by_chat.owner_id, by_chat.line_id) == (2043, BOB, SUPPORT)
    assert by_chat.name == "Ivan Petrov — WhatsApp"
    assert by_chat.channel == "whatsapp"
    assert [c.params for c in portal.calls_to(DIALOG_GET)] == [
        {"CHAT_ID": 2043},
        {"SESSION_ID": 3567},
    ]


async def test_transfer_and_its_look_go_in_one_request(portal: PortalSimulator) -> None:
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert sent(portal, TRANSFER) == [{"CHAT_ID": 2043, "USER_ID": ANNA}]
    assert [c.method for c in portal.calls if not c.in_batch] == ["batch"], "one request"
    assert [c.method for c in portal.calls if c.in_batch] == [TRANSFER, DIALOG_GET]
    assert (seen.after.owner_id, seen.unclear) == (ANNA, None)
    assert portal.dialogs[2043].owner == ANNA


async def test_transfer_to_queue_sends_queue_id_only(portal: PortalSimulator) -> None:
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_SALES)
    assert sent(portal, TRANSFER) == [{"CHAT_ID": 2043, "QUEUE_ID": SALES}]
    assert (seen.after.line_id, seen.after.owner_id) == (SALES, 0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (TO_ANNA, {"CHAT_ID": 2043, "TRANSFER_ID": ANNA}),
        (TO_SALES, {"CHAT_ID": 2043, "TRANSFER_ID": "queue5"}),
    ],
)
async def test_legacy_portals_get_transfer_id(
    portal: PortalSimulator, target: Target, expected: dict[str, object]
) -> None:
    async with client_for(portal, legacy_transfer_id=True) as client:
        await client.transfer(2043, target)
    assert sent(portal, TRANSFER) == [expected]


async def test_portal_refusal_is_a_typed_error_and_not_retried(portal: PortalSimulator) -> None:
    async with client_for(portal) as client:
        with pytest.raises(BitrixError) as caught:
            await client.transfer(9999, TO_ANNA)  # no such dialog: the transfer's catch-all
    assert (caught.value.code, caught.value.status, caught.value.method) == (
        "OPERATOR_WRONG",
        400,
        TRANSFER,
    )
    assert len(portal.calls_to(TRANSFER)) == 1


async def test_a_silently_dropped_transfer_shows_in_the_look(portal: PortalSimulator) -> None:
    # Pavel is inactive: the portal answers true and moves nothing
    async with client_for(portal) as client:
        seen = await client.transfer(2043, Target(Kind.OPERATOR, PAVEL, "Pavel"))
    assert [c.status for c in portal.calls_to(TRANSFER)] == [200]
    assert (seen.after.owner_id, seen.unclear) == (BOB, None)


async def test_unknown_dialog_is_access_error(portal: PortalSimulator) -> None:
    async with client_for(portal) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(9999)
    assert (caught.value.code, caught.value.status) == ("ACCESS_ERROR", 400)
    assert len(portal.calls_to(DIALOG_GET)) == 1


FINAL_CODES = [k for k in KNOWN_CODES if k.method != OURS and k.code != "QUERY_LIMIT_EXCEEDED"]
# answers that may hide a write that ran: repeated on reads only
TRANSIENT = {"QUERY_LIMIT_EXCEEDED", "INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"}


@pytest.mark.parametrize("known", FINAL_CODES, ids=lambda k: f"{k.code}-{k.status}")
async def test_every_bitrix_code_arrives_with_its_status_and_is_not_repeated(
    portal: PortalSimulator, known: KnownCode
) -> None:
    portal.inject(TRANSFER, Fault.error(known.code, status=known.status), times=1)
    async with client_for(portal) as client:
        with pytest.raises(BitrixError) as caught:
            await client.call(TRANSFER, {"CHAT_ID": 2043, "USER_ID": ANNA})
    assert (caught.value.code, caught.value.status) == (known.code, known.status)
    assert len(portal.calls_to(TRANSFER)) == 1, "a write is never repeated on this answer"
    assert portal.dialogs[2043].owner == BOB


@pytest.mark.parametrize("code", sorted(TRANSIENT))
async def test_transient_codes_are_retried_on_reads(portal: PortalSimulator, code: str) -> None:
    portal.inject(DIALOG_GET, Fault.error(code), times=1)
    async with client_for(portal) as client:
        dialog = await client.dialog(2043)
    assert dialog.owner_id == BOB
    assert len(portal.calls_to(DIALOG_GET)) == 2


async def test_query_limit_then_success_is_one_transfer(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.error("QUERY_LIMIT_EXCEEDED"), times=2)
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert [c.status for c in portal.calls_to("batch")] == [503, 503, 200]
    assert applied(portal, TRANSFER) == 1
    assert seen.after.owner_id == ANNA


async def test_query_limit_as_429_is_accepted_too(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.error("QUERY_LIMIT_EXCEEDED", status=429))
    async with client_for(portal) as client:
        await client.transfer(2043, TO_ANNA)
    assert [c.status for c in portal.calls_to("batch")] == [429, 200]


async def test_a_503_proxy_page_is_retried_like_the_limit(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.proxy_page(503), times=2)
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert [c.status for c in portal.calls_to("batch")] == [503, 503, 200]
    assert applied(portal, TRANSFER) == 1
    assert seen.after.owner_id == ANNA


async def test_query_limit_forever_ends_at_the_deadline(portal: PortalSimulator) -> None:
    portal.inject(DIALOG_GET, Fault.error("QUERY_LIMIT_EXCEEDED"), times=1000)
    async with client_for(portal, deadline_s=1.5) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert caught.value.code == "QUERY_LIMIT_EXCEEDED"
    assert 2 <= len(portal.calls_to(DIALOG_GET)) <= 6


async def test_operation_time_limit_is_never_retried(portal: PortalSimulator) -> None:
    portal.inject(DIALOG_GET, Fault.error("OPERATION_TIME_LIMIT"), times=5)
    async with client_for(portal) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert (caught.value.code, caught.value.status) == ("OPERATION_TIME_LIMIT", 429)
    assert len(portal.calls_to(DIALOG_GET)) == 1


async def test_error_key_wins_over_a_200_status(portal: PortalSimulator) -> None:
    portal.inject(DIALOG_GET, Fault.json(200, {"error": "ACCESS_ERROR", "error_description": "x"}))
    async with client_for(portal) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert (caught.value.code, caught.value.status) == ("ACCESS_ERROR", 200)


async def test_result_false_is_a_failure(portal: PortalSimulator) -> None:
    answer = {"result": {"result": {"c0": False, "c1": {"id": 2043}}, "result_error": []}}
    portal.inject("batch", Fault.json(200, answer))
    async with client_for(portal) as client:
        with pytest.raises(BitrixError) as caught:
            await client.transfer(2043, TO_ANNA)
    assert caught.value.code == "RESULT_FALSE"
    assert len(portal.calls_to("batch")) == 1


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault.proxy_page(502), 502),
        (Fault.raw(200, ""), 200),
        (Fault.raw(200, "<html>maintenance</html>"), 200),
        (Fault.json(200, {"no": "result"}), 200),
    ],
)
async def test_non_json_answers_to_a_write_are_looked_at_not_repeated(
    portal: PortalSimulator, fault: Fault, status: int
) -> None:
    portal.inject("batch", fault, times=10)
    async with client_for(portal, deadline_s=1.0) as client:
        seen = await client.finish(2043)
    assert seen.unclear is not None
    assert (seen.unclear.code, seen.unclear.status) == ("BAD_RESPONSE", status)
    assert not seen.after.finished, "the finish did not run, and the look says so"
    assert len(portal.calls_to("batch")) == 1, "a write with an unknown outcome is not repeated"


async def test_html_502_on_a_read_is_retried_then_reported(portal: PortalSimulator) -> None:
    portal.inject(DIALOG_GET, Fault.proxy_page(502), times=1000)
    async with client_for(portal, deadline_s=1.5) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert (caught.value.code, caught.value.status) == ("BAD_RESPONSE", 502)
    assert len(portal.calls_to(DIALOG_GET)) >= 2


async def test_timeout_on_a_read(portal: PortalSimulator) -> None:
    portal.inject(DIALOG_GET, Fault.delay(5, apply=False), times=10)
    async with client_for(portal, timeout_s=0.3, deadline_s=0.8) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert caught.value.code == "TIMEOUT"


async def test_slow_success_is_seen_not_repeated(portal: PortalSimulator) -> None:
    # the transfer runs, but the answer is lost behind a gateway timeout
    portal.inject("batch", Fault.apply_then_fail(504))
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert len(portal.calls_to(TRANSFER)) == 1, "it landed: no second transfer"
    assert [c.method for c in portal.calls if not c.in_batch] == ["batch", DIALOG_GET]
    assert seen.after.owner_id == ANNA
    assert seen.unclear is not None and seen.unclear.status == 504


async def test_timeout_after_the_transfer_ran_is_seen(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.delay(5, apply=True))
    async with client_for(portal, timeout_s=0.3, deadline_s=3.0) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert len(portal.calls_to(TRANSFER)) == 1
    assert seen.after.owner_id == ANNA
    assert seen.unclear is not None and seen.unclear.code == "TIMEOUT"


async def test_dropped_connection_after_the_transfer_ran_is_seen(
    portal: PortalSimulator,
) -> None:
    portal.inject("batch", Fault.drop(apply=True))
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_SALES)
    assert len(portal.calls_to(TRANSFER)) == 1
    assert seen.after.line_id == SALES


async def test_unknown_outcome_is_looked_at_and_never_sent_again(
    portal: PortalSimulator,
) -> None:
    portal.inject("batch", Fault.proxy_page(504))
    async with client_for(portal) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert [c.method for c in portal.calls if not c.in_batch] == ["batch", DIALOG_GET]
    assert seen.after.owner_id == BOB, "it did not move, and the bot does not pretend"
    assert portal.dialogs[2043].owner == BOB


async def test_a_500_keeps_its_code_and_is_sent_once(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.error("INTERNAL_SERVER_ERROR"), times=1000)
    async with client_for(portal, deadline_s=3.0) as client:
        seen = await client.transfer(2043, TO_ANNA)
    assert seen.unclear is not None
    assert (seen.unclear.code, seen.unclear.status) == ("INTERNAL_SERVER_ERROR", 500)
    assert len(portal.calls_to("batch")) == 1, "one transfer call, however often it fails"


async def test_unknown_outcome_that_cannot_be_checked_says_so(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.proxy_page(504))
    portal.inject(DIALOG_GET, Fault.proxy_page(502), times=1000)
    async with client_for(portal, deadline_s=1.5) as client:
        with pytest.raises(BitrixError) as caught:
            await client.transfer(2043, TO_ANNA)
    assert caught.value.code == "OUTCOME_UNKNOWN"
    assert len(portal.calls_to("batch")) == 1


async def test_a_late_apply_after_a_timeout_is_seen_when_it_lands_in_time(
    portal: PortalSimulator,
) -> None:
    portal.inject("batch", Fault.late(apply_after_s=0.4, answer_after_s=5))
    async with client_for(portal, timeout_s=0.3, deadline_s=3.0) as client:
        seen = await client.transfer(2043, TO_SALES)
    assert seen.after.line_id == SALES
    assert len(portal.calls_to("batch")) == 1
    assert portal.moves == [(2043, "queue", SALES)]


async def test_a_late_apply_after_the_look_is_never_doubled(portal: PortalSimulator) -> None:
    portal.inject("batch", Fault.late(apply_after_s=2.5, answer_after_s=5))
    async with client_for(portal, timeout_s=0.3, deadline_s=2.0) as client:
        seen = await client.transfer(2043, TO_SALES)
        assert seen.after.line_id == SUPPORT, "not yet, and that is what is reported"
        await asyncio.sleep(2.5)
    assert len(portal.calls_to("batch")) == 1
    assert portal.moves == [(2043, "queue", SALES)], "moved once, late, never twice"


async def test_a_moved_portal_is_not_followed(
    portal: PortalSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_portal() as new_home:
        portal.move_to(new_home.base_url)
        async with client_for(portal) as client:
            with pytest.raises(BitrixError) as caught:
                await client.transfer(2043, TO_ANNA)
            with pytest.raises(BitrixError) as looked:
                await client.dialog(2043)
        assert new_home.calls == [], "the redirect was not followed"
    assert (caught.value.code, caught.value.status) == ("PORTAL_MOVED", 301)
    assert looked.value.code == "PORTAL_MOVED"
    assert portal.redirected == 2, "a moved portal is not asked again and again"
    assert caught.value.location == f"{new_home.base_url}/rest/1/***/batch.json"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"Location: {new_home.base_url}/rest/1/***/" in logged
    assert WEBHOOK_CODE not in logged + str(caught.value) + repr(caught.value.location)


async def test_waiting_for_the_bucket_does_not_count_against_the_deadline() -> None:
    async with make_portal() as portal:
        settings = bitrix_settings(
            portal.url, rate_per_s=2.0, burst=1, deadline_s=1.0, batch_calls=False
        )
        async with BitrixClient(settings) as client:
            # one request per 0.5 s: the last of five waits about 2 s, twice its deadline
            dialogs = await asyncio.gather(*(client.dialog(2043) for _ in range(5)))
    assert [d.owner_id for d in dialogs] == [BOB] * 5
    assert len(portal.calls_to(DIALOG_GET)) == 5


async def test_a_batched_call_keeps_its_deadline_after_waiting_for_the_bucket() -> None:
    async with make_portal() as portal:
        settings = bitrix_settings(portal.url, rate_per_s=1.0, burst=1, deadline_s=1.2)
        async with BitrixClient(settings) as client:
            await client.dialog(2043)  # the bucket is now full for a second
            portal.inject(DIALOG_GET, Fault.error("QUERY_LIMIT_EXCEEDED"))
            # waits ~1 s for the bucket, is refused, and still has time to try again
            dialog = await client.dialog(2044)
    assert dialog.owner_id == ANNA
    assert [c.status for c in portal.calls_to(DIALOG_GET)] == [200, 503, 200]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_network_error_after_retries() -> None:
    url = f"http://127.0.0.1:{_free_port()}/rest/1/{WEBHOOK_CODE}/"
    async with BitrixClient(bitrix_settings(url, deadline_s=1.2)) as client:
        with pytest.raises(BitrixError) as caught:
            await client.transfer(2043, TO_ANNA)
    assert caught.value.code == "NETWORK_ERROR"
    assert caught.value.sent is False


async def test_connection_refused_then_up_is_retried_into_success() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/rest/1/{WEBHOOK_CODE}/"
    portal = make_portal()
    async with BitrixClient(bitrix_settings(url, deadline_s=6.0)) as client:
        call = asyncio.create_task(client.dialog(2043))
        await asyncio.sleep(0.3)  # the first attempt is refused: nobody listens yet
        await portal.start(port=port)
        try:
            dialog = await call
        finally:
            await portal.close()
    assert dialog.owner_id == BOB


async def test_dns_failure_is_its_own_code() -> None:
    url = f"https://portal.invalid/rest/1/{WEBHOOK_CODE}/"
    async with BitrixClient(bitrix_settings(url)) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert caught.value.code == "DNS_ERROR"


async def test_wrong_webhook_code_is_no_auth_found(portal: PortalSimulator) -> None:
    url = portal.url.replace(WEBHOOK_CODE, "wrongcode")
    async with BitrixClient(bitrix_settings(url)) as client:
        with pytest.raises(BitrixError) as caught:
            await client.dialog(2043)
    assert (caught.value.code, caught.value.status) == ("NO_AUTH_FOUND", 401)


async def test_the_webhook_code_never_shows(
    portal: PortalSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    portal.inject("batch", Fault.proxy_page(504))
    portal.inject(DIALOG_GET, Fault.error("QUERY_LIMIT_EXCEEDED"))
    errors: list[BitrixError] = []
    async with client_for(portal) as client:
        assert WEBHOOK_CODE not in repr(client)
        await client.transfer(2043, TO_ANNA)
        for call in (client.dialog(9999), client.transfer(9999, TO_ANNA)):
            try:
                await call
            except BitrixError as err:
                errors.append(err)
    refused = BitrixClient(
        bitrix_settings(f"http://127.0.0.1:{_free_port()}/rest/1/{WEBHOOK_CODE}/", deadline_s=0.5)
    )
    try:
        await refused.dialog(1)
    except BitrixError as err:
        errors.append(err)
    await refused.close()
    assert len(errors) == 3
    for err in errors:
        assert WEBHOOK_CODE not in f"{err} {err!r} {err.description} {err.args}"
    assert caplog.records, "the client logs what it does"
    assert all(WEBHOOK_CODE not in r.getMessage() for r in caplog.records)


async def test_client_bucket_keeps_under_the_portal_limit() -> None:
    async with make_portal(leak_per_s=20.0, burst=10) as portal:
        async with BitrixClient(
            bitrix_settings(portal.url, rate_per_s=20.0, burst=10, deadline_s=10.0)
        ) as client:
            dialogs = await asyncio.gather(*(client.dialog(2043) for _ in range(30)))
        assert len(dialogs) == 30
        assert portal.rejected_by_limit == 0
        assert len(portal.calls_to(DIALOG_GET)) == 30


async def test_finish_sends_chat_id_and_reports_its_own_codes(portal: PortalSimulator) -> None:
    async with client_for(portal) as client:
        seen = await client.finish(2043)
        with pytest.raises(BitrixError) as caught:
            await client.finish(9999)
    assert sent(portal, FINISH) == [{"CHAT_ID": 2043}, {"CHAT_ID": 9999}]
    assert portal.dialogs[2043].closed and seen.after.finished
    assert (caught.value.code, caught.value.status) == ("ACCESS_DENIED", 400)


async def test_calls_waiting_for_the_bucket_leave_together_as_batches() -> None:
    async with make_portal(leak_per_s=10.0, burst=5) as portal:
        settings = bitrix_settings(portal.url, rate_per_s=10.0, burst=5, deadline_s=10.0)
        async with BitrixClient(settings) as client:
            dialogs = await asyncio.gather(*(client.dialog(2043) for _ in range(60)))
            to_bob = Target(Kind.OPERATOR, BOB, "Bob Lee")
            targets = [to_bob, Target(Kind.OPERATOR, PAVEL, "Pavel"), TO_SALES]
            outcomes = await asyncio.gather(
                *(client.transfer(n, t) for n, t in zip((2044, 2045, 2046), targets, strict=True)),
                *(client.dialog(9999) for _ in range(10)),
                client.transfer(9999, to_bob),
                return_exceptions=True,
            )
    assert all(d.owner_id == BOB for d in dialogs)
    requests = [c for c in portal.calls if not c.in_batch]
    assert len(requests) < 20, "60 calls went out in a handful of requests"
    assert portal.calls_to("batch"), "some went as batches"
    assert portal.rejected_by_limit == 0
    # each call still gets its own result or error, and each transfer its own look
    seen = [o for o in outcomes[:3] if isinstance(o, Seen)]
    assert [(s.after.chat_id, s.after.owner_id, s.after.line_id) for s in seen] == [
        (2044, BOB, SUPPORT),
        (2045, IRINA, SUPPORT),  # Pavel is inactive: dropped without a word
        (2046, 0, SALES),
    ]
    assert all(isinstance(o, BitrixError) and o.code == "ACCESS_ERROR" for o in outcomes[3:13])
    assert isinstance(outcomes[13], BitrixError) and outcomes[13].code == "OPERATOR_WRONG"


async def test_without_batching_each_call_waits_its_turn() -> None:
    async with make_portal(leak_per_s=50.0, burst=5) as portal:
        settings = bitrix_settings(
            portal.url, rate_per_s=50.0, burst=5, deadline_s=10.0, batch_calls=False
        )
        async with BitrixClient(settings) as client:
            await asyncio.gather(*(client.dialog(2043) for _ in range(30)))
    assert not portal.calls_to("batch")
    assert len(portal.calls_to(DIALOG_GET)) == 30


async def test_a_burst_does_not_spend_the_real_bucket_on_small_batches() -> None:
    # the real bucket (50, drains 2 a second) and 300 commands coming in a couple of
    # milliseconds apart, as the bot hands them on: each a transfer and its look, so 600 calls
    # fit in 12 batches of 50; sent as they came, they would have taken over 50 requests
    commands, first = 300, 10_000
    chats = range(first, first + commands)
    portal = make_portal(leak_per_s=2.0, burst=50)
    for n in chats:
        portal.dialogs[n] = SimDialog(n, n, f"Guest {n}", owner=IRINA, line_id=SUPPORT)
    async with portal:
        settings = bitrix_settings(portal.url, rate_per_s=2.0, burst=50, deadline_s=30.0)

        async def one(n: int) -> Seen:
            await asyncio.sleep((n - first) * 0.002)
            return await client.transfer(n, TO_ANNA)

        async with BitrixClient(settings) as client:
            seen = await asyncio.gather(*(one(n) for n in chats))
    assert all(s.after.owner_id == ANNA and s.unclear is None for s in seen)
    requests = [c for c in portal.calls if not c.in_batch]
    floor = math.ceil(2 * commands / 50)
    assert floor <= len(requests) <= floor + 3, f"{len(requests)} requests, floor {floor}"
    assert portal.rejected_by_limit == 0, "no QUERY_LIMIT_EXCEEDED"
    moved = [int(c.params["CHAT_ID"]) for c in portal.calls_to(TRANSFER) if c.applied]
    assert sorted(moved) == list(chats), "each dialog moved once, none twice"
    # a transfer and its look stay together, in order, in every batch
    for request in requests:
        commands_sent = list(request.params["cmd"].values())
        assert len(commands_sent) % 2 == 0
        for write, look in zip(commands_sent[::2], commands_sent[1::2], strict=True):
            chat = write.split("CHAT_ID=")[1].split("&")[0]
            assert write.startswith(TRANSFER) and look == f"{DIALOG_GET}?CHAT_ID={chat}"


async def test_commands_one_at_a_time_are_lone_and_a_burst_is_not() -> None:
    # under the real bucket a lone command's calls leave at once (no batch to wait for); a
    # burst's gather, and its commands are marked sent just before their writes, not early
    portal = make_portal(leak_per_s=2.0, burst=50)
    for n in range(10_000, 10_040):
        portal.dialogs[n] = SimDialog(n, n, f"Guest {n}", owner=IRINA, line_id=SUPPORT)
    async with portal:
        settings = bitrix_settings(portal.url, rate_per_s=2.0, burst=50, deadline_s=30.0)
        async with BitrixClient(settings) as client:
            for n in (10_000, 10_001):  # one at a time, a round trip apart
                await asyncio.sleep(0.05)
                assert client.lone
                await client.dialog(n)
                await asyncio.sleep(0.05)
                assert client.lone
                await client.transfer(n, TO_ANNA)
            requests = len([c for c in portal.calls if not c.in_batch])
            assert requests == 4, "each call went out as it came"
            burst = [
                asyncio.create_task(client.transfer(n, TO_ANNA)) for n in range(10_002, 10_040)
            ]
            await asyncio.sleep(0)
            assert not client.lone, "38 transfers queued at once"
            await asyncio.gather(*burst)
    assert len([c for c in portal.calls if not c.in_batch]) == 4 + 2, "76 calls, two batches"


async def test_a_commands_next_call_right_after_its_last_goes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a portal 0 ms away: the transfer comes right after the command's own look, with nothing
    # else of ours under way and the bucket nearly empty, so it does not wait for company
    # (which it would, the 5 s the bucket takes to let one more request through at 0.2 a
    # second, with the quiet made as long)
    monkeypatch.setattr(batching, "QUIET_S", 5.0)
    portal = make_portal(leak_per_s=0.2, burst=50)
    async with portal:
        settings = bitrix_settings(portal.url, rate_per_s=0.2, burst=50, deadline_s=30.0)
        async with BitrixClient(settings) as client:
            started = asyncio.get_running_loop().time()
            await client.dialog(2043)
            seen = await client.transfer(2043, TO_ANNA)
            waited = asyncio.get_running_loop().time() - started
    assert seen.after.owner_id == ANNA
    assert waited < 2.5, f"{waited:.2f} s: it waited to share a batch"
    assert len([c for c in portal.calls if not c.in_batch]) == 2, "each call as it came"


async def test_a_caller_that_gives_up_on_a_batch_leaves_nothing_unread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batch's answer comes after its caller was cancelled: its calls' results, one of
    them an error, are dropped quietly (no "exception was never retrieved"), and a call made
    after it is answered as usual."""
    import gc

    portal = make_portal(latency_s=0.1)
    async with portal, BitrixClient(bitrix_settings(portal.url)) as client:
        calls = {"missing": ("imopenlines.dialog.get", {"CHAT_ID": 9999})}
        calls["seen"] = ("imopenlines.dialog.get", {"CHAT_ID": 2043})
        caller = asyncio.create_task(client.batch(calls))
        while not portal.calls:  # noqa: ASYNC110 - the request is out (no event to wait on)
            await asyncio.sleep(0.005)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.2)  # the answer came meanwhile
        assert (await client.dialog(2044)).owner_id == ANNA
    del caller
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert len(portal.calls_to("batch")) == 1
