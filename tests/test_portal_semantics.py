"""The portal simulator's imopenlines semantics, scopes, profile, redirects and late applies.

Over real HTTP on 127.0.0.1 with a plain aiohttp client, like tests/test_portal_sim.py (whose
small portal and helpers this file reuses).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import aiohttp
import pytest

from bot.sandbox import portal as portal_module
from bot.sandbox.loopback import serve
from bot.sandbox.portal import Fault, PortalSimulator, SimDialog, SimOperator, error_body
from tests import test_portal_sim
from tests.test_portal_sim import FakeClock, call, make_portal

TRANSFER = "imopenlines.operator.transfer"
GET = "imopenlines.dialog.get"
FINISH = "imopenlines.operator.another.finish"


# the simulator's fixtures, shared with its protocol tests
clock = test_portal_sim.clock
portal = test_portal_sim.portal
http = test_portal_sim.http


async def dialog(http: aiohttp.ClientSession, portal: PortalSimulator, chat_id: int) -> Any:
    """``dialog.get`` by CHAT_ID; the result object."""
    status, body = await call(http, portal, GET, {"CHAT_ID": chat_id})
    assert status == 200, body
    return body["result"]


def fields(result: Any) -> list[str]:
    """``entity_data_1`` split into its ten fields."""
    parts: list[str] = result["entity_data_1"].split("|")
    assert len(parts) == 10
    return parts


# --- transfer: targets, refusals, moves --------------------------------------------------------


async def test_user_id_wins_then_queue_id(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    both = {"CHAT_ID": 2043, "USER_ID": 16, "QUEUE_ID": 5, "TRANSFER_ID": "queue3"}
    assert (await call(http, portal, TRANSFER, both))[1]["result"] is True
    got = await dialog(http, portal, 2043)
    assert (got["owner"], fields(got)[7]) == (16, "3")  # to the user; the line stays
    queue_over_transfer = {"CHAT_ID": 2043, "QUEUE_ID": 5, "TRANSFER_ID": 15}
    assert (await call(http, portal, TRANSFER, queue_over_transfer))[1]["result"] is True
    got = await dialog(http, portal, 2043)
    assert (got["owner"], fields(got)[7]) == (0, "5")
    assert portal.moves == [(2043, "user", 16), (2043, "queue", 5)]


async def test_webhook_own_user_is_refused(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock, webhook_user_id=16) as portal:
        for target in ({"USER_ID": 16}, {"TRANSFER_ID": "16"}):
            got = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, **target})
            assert got == error_body("OPERATOR_WRONG")
        # anyone else, user 1 included, is a normal target on this portal
        status, body = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 1})
        assert (status, body["result"]) == (200, True)
        assert portal.dialogs[2043].owner == 1
        assert portal.moves == [(2043, "user", 1)]


async def test_line_without_rights_is_refused(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.denied_lines.add(3)
    assert await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16}) == error_body(
        "OPERATOR_WRONG"
    )
    assert await call(http, portal, GET, {"CHAT_ID": 2043}) == error_body("ACCESS_ERROR")
    assert await call(http, portal, FINISH, {"CHAT_ID": 2043}) == error_body(
        "ACCESS_DENIED", status=400
    )
    assert portal.dialogs[2043].owner == 15 and not portal.dialogs[2043].closed
    portal.denied_lines.clear()
    assert (await dialog(http, portal, 2043))["owner"] == 15


async def test_transfer_to_current_holder_makes_noise(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    before = await dialog(http, portal, 2043)
    for _ in range(2):
        status, body = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 15})
        assert (status, body["result"]) == (200, True)
    assert await dialog(http, portal, 2043) == before
    assert portal.dialogs[2043].system_messages == ["transferred to 15", "transferred to 15"]
    # a dialog waiting in line 3, sent to line 3 again
    status, body = await call(http, portal, TRANSFER, {"CHAT_ID": 2044, "TRANSFER_ID": "queue3"})
    assert (status, body["result"]) == (200, True)
    assert portal.dialogs[2044].system_messages == ["transferred to queue 3"]
    assert portal.moves == []
    # a real move makes no such note
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
    assert len(portal.dialogs[2043].system_messages) == 2
    assert portal.moves == [(2043, "user", 16)]


async def test_queue_moves_are_counted(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "QUEUE_ID": 5})
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "QUEUE_ID": 5})
    await call(http, portal, TRANSFER, {"CHAT_ID": 2044, "QUEUE_ID": 5})
    queue_moves = [m for m in portal.moves if m[1] == "queue"]
    assert queue_moves == [(2043, "queue", 5), (2043, "queue", 5), (2044, "queue", 5)]
    assert portal.moves[1] == (2043, "user", 16)


async def test_locked_chat_moves_once_unlocked(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.dialogs[2043].locked = True
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
    assert portal.dialogs[2043].owner == 15
    portal.dialogs[2043].locked = False
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
    assert portal.dialogs[2043].owner == 16
    assert portal.moves == [(2043, "user", 16)]


# --- dialog fields ----------------------------------------------------------------------------


async def test_entity_id_keeps_the_creation_line(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    original = (await dialog(http, portal, 2043))["entity_id"]
    assert original == "telegram|3|2043|2043"
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "QUEUE_ID": 5})
    got = await dialog(http, portal, 2043)
    assert got["entity_id"] == original
    assert (got["owner"], got["manager_list"], fields(got)[5], fields(got)[7]) == (
        0,
        [],
        "501",
        "5",
    )
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
    got = await dialog(http, portal, 2043)
    assert (got["entity_id"], got["owner"], got["manager_list"]) == (original, 16, [16])
    assert fields(got)[7] == "5"
    # the USER_CODE still is the creation one
    status, body = await call(http, portal, GET, {"USER_CODE": original})
    assert status == 200 and body["result"]["id"] == 2043
    assert await call(http, portal, GET, {"USER_CODE": "telegram|5|2043|2043"}) == error_body(
        "ACCESS_ERROR"
    )


async def test_dialog_created_elsewhere(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.dialogs[3000] = SimDialog(
        3000, 900, "Moved Guest", owner=0, line_id=5, connector="vkgroup", created_line_id=3
    )
    got = await dialog(http, portal, 3000)
    assert got["entity_id"] == "vkgroup|3|3000|3000"
    assert (fields(got)[5], fields(got)[7], got["manager_list"]) == ("900", "5", [])
    assert SimDialog(1, 2, "x", owner=15, line_id=4).created_line_id == 4


def test_sim_dialog_defaults() -> None:
    held = SimDialog(1, 2, "x", owner=15, line_id=4)
    assert (held.manager_list, held.locked, held.closed, held.system_messages) == (
        [15],
        False,
        False,
        [],
    )
    assert SimDialog(1, 2, "x", owner=0, line_id=4).manager_list == []
    assert SimDialog(1, 2, "x", owner=15, line_id=4, manager_list=[15, 27]).managers == [15, 27]
    held.owner = 16  # a test moving it by hand: dialog.get follows the owner
    assert held.managers == [16]
    with pytest.raises(ValueError, match="kind"):
        SimOperator(5, "Someone", kind="robot")


async def test_finish_closes_the_session(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "QUEUE_ID": 5})
    assert (await call(http, portal, FINISH, {"CHAT_ID": 2043}))[1]["result"] is True
    got = await dialog(http, portal, 2043)
    assert (got["owner"], got["manager_list"], fields(got)[5], fields(got)[7]) == (0, [], "0", "5")
    assert portal.dialogs[2043].closed
    status, body = await call(http, portal, GET, {"SESSION_ID": 501})
    assert status == 200 and body["result"] == got
    # no session: a transfer answers true and nothing moves
    assert (await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16}))[1]["result"]
    assert await dialog(http, portal, 2043) == got
    assert portal.moves == [(2043, "queue", 5)]
    assert await call(http, portal, FINISH, {"CHAT_ID": 9999}) == error_body(
        "ACCESS_DENIED", status=400
    )


# --- user.get types ---------------------------------------------------------------------------


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["ID"] for item in items]


async def test_user_get_types_json(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    _, body = await call(http, portal, "user.get")
    assert ids(body["result"]) == ["1", "15", "16", "17", "18"]  # no bot, no connector user
    assert [u["USER_TYPE"] for u in body["result"]] == ["employee"] * 4 + ["extranet"]
    _, body = await call(http, portal, "user.get", {"FILTER": {"USER_TYPE": "employee"}})
    assert (ids(body["result"]), body["total"]) == (["1", "15", "16", "17"], 4)
    flt = {"USER_TYPE": "employee", "ACTIVE": True}
    _, body = await call(http, portal, "user.get", {"FILTER": flt})
    assert ids(body["result"]) == ["1", "15", "16"]
    _, body = await call(http, portal, "user.get", {"FILTER": {"USER_TYPE": "extranet"}})
    assert ids(body["result"]) == ["18"]
    _, body = await call(http, portal, "user.get", {"FILTER": {"ID": [19, 20, 15]}})
    assert ids(body["result"]) == ["15"]


async def test_user_get_types_in_batch(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    cmd = {
        "emp": "user.get?FILTER[USER_TYPE]=employee&FILTER[ACTIVE]=1",
        "ext": "user.get?FILTER[USER_TYPE]=extranet",
        "off": "user.get?FILTER[ACTIVE]=0",
        "all": "user.get",
    }
    status, body = await call(http, portal, "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    result = body["result"]["result"]
    assert ids(result["emp"]) == ["1", "15", "16"]
    assert ids(result["ext"]) == ["18"]
    assert ids(result["off"]) == ["17"]
    assert ids(result["all"]) == ["1", "15", "16", "17", "18"]
    assert body["result"]["result_total"] == {"emp": 3, "ext": 1, "off": 1, "all": 5}


async def test_user_get_pages_skip_bots(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    people = [SimOperator(100 + i, f"Person {i}") for i in range(60)]
    bots = [SimOperator(200 + i, f"Bot {i}", kind="bot") for i in range(10)]
    async with PortalSimulator(
        operators=people + bots, queues=[], dialogs=[], clock=clock
    ) as portal:
        _, first = await call(http, portal, "user.get", {"FILTER": {"USER_TYPE": "employee"}})
        assert (len(first["result"]), first["total"], first["next"]) == (50, 60, 50)
        _, second = await call(http, portal, "user.get", {"start": 50})
        assert len(second["result"]) == 10 and "next" not in second
        assert second["result"][-1]["ID"] == "159"


async def test_user_get_online_by_id_list(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.operators[16].online = False
    _, body = await call(http, portal, "user.get", {"FILTER": {"ID": [16, 15, 17, 19]}})
    # IDs as strings; the dismissed user is never online; a bot is never listed
    assert [(u["ID"], u["IS_ONLINE"]) for u in body["result"]] == [
        ("15", "Y"),
        ("16", "N"),
        ("17", "N"),
    ]
    assert (body["total"], "next" in body) == (3, False)
    portal.operators[16].online = True
    # the same filter as a batch command carries it: FILTER[ID][0]=16…
    cmd = {"u": "user.get?FILTER[ID][0]=16&FILTER[ID][1]=18&FILTER[ACTIVE]=Y"}
    _, body = await call(http, portal, "batch", {"cmd": cmd})
    assert [(u["ID"], u["IS_ONLINE"]) for u in body["result"]["result"]["u"]] == [
        ("16", "Y"),
        ("18", "Y"),  # extranet users are listed, and may be online
    ]


async def test_user_get_by_ids_pages_fifty_with_total_and_next(
    clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    people = [SimOperator(100 + i, f"Person {i}", online=i % 2 == 0) for i in range(60)]
    async with PortalSimulator(operators=people, queues=[], dialogs=[], clock=clock) as portal:
        wanted = [100 + i for i in range(55)]
        _, first = await call(http, portal, "user.get", {"FILTER": {"ID": wanted}})
        assert (len(first["result"]), first["total"], first["next"]) == (50, 55, 50)
        assert [u["IS_ONLINE"] for u in first["result"][:3]] == ["Y", "N", "Y"]
        params = {"FILTER": {"ID": wanted}, "start": 50}
        _, second = await call(http, portal, "user.get", params)
        assert [u["ID"] for u in second["result"]] == ["150", "151", "152", "153", "154"]
        assert "next" not in second


async def test_user_get_without_the_user_scope_at_run_time(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.scopes.discard("user")
    status, body = await call(http, portal, "user.get", {"FILTER": {"ID": [15]}})
    assert (status, body) == (403, error_body("insufficient_scope")[1])
    assert (await dialog(http, portal, 2043))["id"] == 2043, "the rest still works"


# --- scopes, profile, scope -------------------------------------------------------------------


async def test_insufficient_scope(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock, scopes=["imopenlines"]) as portal:
        assert await call(http, portal, "user.get") == error_body("insufficient_scope")
        assert error_body("insufficient_scope")[0] == 403
        assert (await dialog(http, portal, 2043))["id"] == 2043
        cmd = {"u": "user.get", "d": "imopenlines.dialog.get?CHAT_ID=2043"}
        status, body = await call(http, portal, "batch", {"cmd": cmd})
        assert status == 200
        assert body["result"]["result_error"] == {"u": error_body("insufficient_scope")[1]}
        assert list(body["result"]["result"]) == ["d"]
        assert (await call(http, portal, "scope"))[1]["result"] == ["imopenlines"]
        assert (await call(http, portal, "profile"))[0] == 200
    async with make_portal(clock, scopes=["user"]) as portal:
        got = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
        assert got == error_body("insufficient_scope")
        assert portal.dialogs[2043].owner == 15 and portal.moves == []
        for method in (GET, FINISH, "imopenlines.config.list.get"):
            assert (await call(http, portal, method, {"CHAT_ID": 2043}))[1]["error"] == (
                "insufficient_scope"
            )
        assert not portal.dialogs[2043].closed
        assert (await call(http, portal, "user.get"))[0] == 200
        assert (await call(http, portal, "no.such.method"))[1]["error"] == (
            "ERROR_METHOD_NOT_FOUND"
        )


async def test_profile_and_scope(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock) as portal:
        status, body = await call(http, portal, "profile")
        assert status == 200
        assert body["result"] == {
            "ID": "1",
            "ADMIN": True,
            "NAME": "Webhook",
            "LAST_NAME": "User",
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": 0,
        }
        assert (await call(http, portal, "scope"))[1]["result"] == ["imopenlines", "user"]
    async with make_portal(
        clock, webhook_user_id=7, webhook_user_name="Olga Sidorova", scopes=[], oauth_tokens={"t"}
    ) as portal:
        async with http.post(f"{portal.url}profile.json", json={}) as resp:
            assert resp.status == 200
            profile = (await resp.json())["result"]
        assert (profile["ID"], profile["NAME"], profile["LAST_NAME"]) == ("7", "Olga", "Sidorova")
        async with http.post(f"{portal.oauth_url}profile.json", json={"auth": "t"}) as resp:
            assert (await resp.json())["result"] == profile  # OAuth: the same user
        async with http.get(f"{portal.oauth_url}scope?auth=t") as resp:
            assert (await resp.json())["result"] == []


# --- a moved portal ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_moved_portal_redirects_everything(
    clock: FakeClock, http: aiohttp.ClientSession, code: int
) -> None:
    async with make_portal(clock, burst=1, leak_per_s=0.0, oauth_tokens={"t"}) as portal:
        new = "https://new.example.bitrix24.com"
        portal.move_to(new + "/", code)
        assert portal.moved_to == new
        requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", f"{portal.url}{TRANSFER}.json", {"CHAT_ID": 2043, "USER_ID": 16}),
            ("GET", f"{portal.url}{GET}?CHAT_ID=2043", None),
            ("POST", f"{portal.oauth_url}user.get.json", {"auth": "t"}),
            ("GET", f"{portal.base_url}/rest/whatever", None),
            ("POST", f"{portal.base_url}/rest/1/wrong/batch.json", {"cmd": {}}),
            ("GET", f"{portal.base_url}/", None),
        ]
        for verb, url, body in requests:
            async with http.request(verb, url, json=body, allow_redirects=False) as resp:
                assert resp.status == code
                path_qs = url.removeprefix(portal.base_url)
                assert resp.headers["Location"] == f"{new}{path_qs}"
                assert resp.content_type == "text/html"
                assert str(code) in await resp.text()
        assert portal.redirected == len(requests)
        assert portal.calls == [] and portal.bucket_level == 0.0
        assert portal.rejected_by_limit == 0
        assert portal.dialogs[2043].owner == 15
        portal.move_to(None)
        assert portal.moved_to is None
        status, _ = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
        assert status == 200 and portal.dialogs[2043].owner == 16
        assert portal.redirected == len(requests)


def test_move_to_needs_a_redirect_status() -> None:
    portal = make_portal(FakeClock())
    with pytest.raises(ValueError, match="redirect status"):
        portal.move_to("https://elsewhere.example", 200)
    assert portal.moved_to is None


async def test_get_without_body_runs_with_no_params(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    """What a client that followed a 301/302 with a GET would get: the method, no params."""
    async with http.get(f"{portal.url}{TRANSFER}.json") as resp:
        assert (resp.status, await resp.json()) == error_body("CHAT_ID_EMPTY")
    async with http.get(f"{portal.url}{GET}.json") as resp:
        assert (resp.status, await resp.json()) == error_body("ACCESS_ERROR")
    assert [c.params for c in portal.calls] == [{}, {}]
    assert portal.dialogs[2043].owner == 15


# --- a portal that applies late ---------------------------------------------------------------


async def wait_until_applied(portal: PortalSimulator, method: str, deadline_s: float) -> float:
    """Poll until the first call of ``method`` has run; return the loop time it was seen."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not portal.calls_to(method)[0].applied:
        assert loop.time() - start < deadline_s, "the late apply never happened"
        await asyncio.sleep(0.01)
    return loop.time()


async def test_late_apply_after_the_client_gave_up(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.inject(TRANSFER, Fault.late(apply_after_s=0.6, answer_after_s=1.2))
    loop = asyncio.get_running_loop()
    sent = loop.time()
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{portal.url}{TRANSFER}.json",
            json={"CHAT_ID": 2043, "USER_ID": 16},
            timeout=aiohttp.ClientTimeout(total=0.1),
        ):
            pass
    (recorded,) = portal.calls_to(TRANSFER)
    assert recorded.applied == (portal.dialogs[2043].owner == 16)
    applied_at = await wait_until_applied(portal, TRANSFER, 5.0)
    assert applied_at - sent >= 0.59  # not before apply_after_s
    assert portal.dialogs[2043].owner == 16
    assert portal.moves == [(2043, "user", 16)]
    # the portal keeps serving meanwhile
    assert (await dialog(http, portal, 2043))["owner"] == 16


async def test_late_apply_answers_a_patient_client(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.inject(TRANSFER, Fault.late(0.2, 0.4))
    loop = asyncio.get_running_loop()
    sent = loop.time()
    status, body = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "QUEUE_ID": 5})
    assert loop.time() - sent >= 0.38
    assert (status, body["result"]) == (200, True)
    (recorded,) = portal.calls_to(TRANSFER)
    assert recorded.applied and recorded.status == 200 and recorded.body["result"] is True
    assert portal.dialogs[2043].line_id == 5


async def test_late_apply_in_a_batch(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    portal.inject("batch", Fault.late(0.5, 2.0))
    sent = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await http.post(
            f"{portal.url}batch.json",
            json={"cmd": {"a": f"{TRANSFER}?CHAT_ID=2044&USER_ID=16"}},
            timeout=aiohttp.ClientTimeout(total=0.1),
        )
    assert await wait_until_applied(portal, "batch", 5.0) - sent >= 0.49
    assert portal.dialogs[2044].owner == 16
    (inner,) = portal.calls_to(TRANSFER)
    assert inner.in_batch and inner.body["result"] is True


async def test_late_apply_cancelled_on_close(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock) as portal:
        portal.inject(TRANSFER, Fault.late(5.0, 5.0))
        with pytest.raises(TimeoutError):
            await http.post(
                f"{portal.url}{TRANSFER}.json",
                json={"CHAT_ID": 2043, "USER_ID": 16},
                timeout=aiohttp.ClientTimeout(total=0.1),
            )
        await portal.close()
        await asyncio.sleep(0.05)
    (recorded,) = portal.calls_to(TRANSFER)
    assert not recorded.applied and portal.dialogs[2043].owner == 15


def test_fault_late_fields() -> None:
    fault = Fault.late(0.5, 2.0)
    assert (fault.action, fault.apply, fault.apply_after_s, fault.delay_s) == (
        "normal",
        True,
        0.5,
        2.0,
    )
    with pytest.raises(ValueError, match="apply_after_s"):
        Fault.late(2.0, 0.5)
    assert Fault.delay(1.0).apply_after_s == 0.0


async def test_older_faults_still_apply_at_once(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal.inject(TRANSFER, Fault.error("INTERNAL_SERVER_ERROR", apply=True))
    got = await call(http, portal, TRANSFER, {"CHAT_ID": 2043, "USER_ID": 16})
    assert got == error_body("INTERNAL_SERVER_ERROR")
    assert portal.dialogs[2043].owner == 16 and portal.calls_to(TRANSFER)[0].applied


async def test_late_apply_survives_handler_cancellation(
    clock: FakeClock, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served so that a client hanging up cancels the handler: the apply happens anyway."""
    monkeypatch.setattr(portal_module, "serve", partial(serve, cancel_on_disconnect=True))
    async with make_portal(clock) as portal:
        portal.inject(TRANSFER, Fault.late(0.5, 1.0))
        sent = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await http.post(
                f"{portal.url}{TRANSFER}.json",
                json={"CHAT_ID": 2043, "USER_ID": 16},
                timeout=aiohttp.ClientTimeout(total=0.1),
            )
        assert await wait_until_applied(portal, TRANSFER, 5.0) - sent >= 0.49
        assert portal.dialogs[2043].owner == 16
