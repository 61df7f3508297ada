"""Tests of the Bitrix24 portal simulator over real HTTP with a plain aiohttp client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bot.sandbox.portal import (
    Fault,
    PortalSimulator,
    SimDialog,
    SimOperator,
    SimQueue,
    error_body,
    parse_php_query,
)

CODE = "sandbox0secret0code"


class FakeClock:
    """A hand-driven clock for the leaky bucket."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_portal(clock: FakeClock, **kwargs: Any) -> PortalSimulator:
    """A small portal: users 1 (webhook owner), 15, 16, 17 (dismissed), 18 (extranet),
    19 (a chat bot), 20 (a connector user); lines 3 and 5; dialogs 2043 (with 15), 2044
    (waiting in line 3), 2045 (finished)."""
    return PortalSimulator(
        operators=[
            SimOperator(1, "Admin Root"),
            SimOperator(15, "Anna Petrova"),
            SimOperator(16, "Boris Ivanov"),
            SimOperator(17, "Vera Old", active=False),
            SimOperator(18, "Eva Partner", kind="extranet"),
            SimOperator(19, "Helper Bot", kind="bot"),
            SimOperator(20, "Telegram Customer", kind="connector"),
        ],
        queues=[SimQueue(3, "Sales", operator_ids=(15, 16)), SimQueue(5, "Support")],
        dialogs=[
            SimDialog(2043, 501, "Green Guest #17", owner=15, line_id=3),
            SimDialog(2044, 502, "Blue Guest #18", owner=0, line_id=3, connector="livechat"),
            SimDialog(2045, 503, "Old Guest", owner=16, line_id=5, closed=True),
        ],
        clock=clock,
        **kwargs,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def portal(clock: FakeClock) -> AsyncIterator[PortalSimulator]:
    async with make_portal(clock) as sim:
        yield sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    portal: PortalSimulator,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    form: bool = False,
) -> tuple[int, Any]:
    """POST a method like a client would; return (status, decoded JSON body)."""
    url = f"{portal.url}{method}.json"
    if form:
        async with http.post(url, data=params or {}) as resp:
            return resp.status, await resp.json()
    async with http.post(url, json=params or {}) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


# --- imopenlines.dialog.get -----------------------------------------------------------------


async def test_dialog_get_by_chat_id(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    assert status == 200
    result = body["result"]
    assert result["id"] == 2043
    assert result["name"] == "Green Guest #17"
    assert result["owner"] == 15
    assert result["type"] == "lines"
    assert result["entity_type"] == "LINES"
    assert result["entity_id"] == "telegram|3|2043|2043"
    assert result["manager_list"] == [15]
    fields = result["entity_data_1"].split("|")
    assert len(fields) == 10
    assert fields[:5] == ["N", "NONE", "0", "N", "N"]
    assert (fields[5], fields[7], fields[8:]) == ("501", "3", ["0", "0"])
    assert 0 < time.time() - int(fields[6]) < 7200  # DATE_CREATE: a unix time, an hour ago
    assert list(result) == [
        "id",
        "name",
        "owner",
        "type",
        "entity_type",
        "entity_id",
        "entity_data_1",
        "manager_list",
        "date_create",
        "dialog_id",
    ]
    assert result["dialog_id"] == "chat2043"
    assert isinstance(result["date_create"], str) and "T" in result["date_create"]
    assert set(body["time"]) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    }


async def test_dialog_get_other_keys(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    for params in (
        {"SESSION_ID": 502},
        {"DIALOG_ID": "chat2044"},
        {"USER_CODE": "livechat|3|2044|2044"},
    ):
        status, body = await call(http, portal, "imopenlines.dialog.get", params)
        assert status == 200, params
        assert body["result"]["id"] == 2044
        assert body["result"]["manager_list"] == []
    # a finished dialog is still found by its last session number; field 5 reads 0
    status, body = await call(http, portal, "imopenlines.dialog.get", {"SESSION_ID": 503})
    assert status == 200 and body["result"]["id"] == 2045
    assert body["result"]["entity_data_1"].split("|")[5] == "0"


@pytest.mark.parametrize(
    "params",
    [{"CHAT_ID": 9999}, {"DIALOG_ID": "chat9999"}, {"SESSION_ID": 1}, {}, {"chat_id": 2043}],
)
async def test_dialog_get_access_error(
    portal: PortalSimulator, http: aiohttp.ClientSession, params: dict[str, Any]
) -> None:
    status, body = await call(http, portal, "imopenlines.dialog.get", params)
    assert (status, body) == (
        400,
        {
            "error": "ACCESS_ERROR",
            "error_description": "You do not have access to the specified dialog",
        },
    )


# --- imopenlines.operator.transfer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"USER_ID": 16}, "CHAT_ID_EMPTY"),
        ({"CHAT_ID": 0, "USER_ID": 16}, "CHAT_ID_EMPTY"),
        ({"CHAT_ID": "abc", "USER_ID": 16}, "CHAT_ID_EMPTY"),
        ({"chat_id": 2043, "USER_ID": 16}, "CHAT_ID_EMPTY"),
        ({"CHAT_ID": 2043, "USER_ID": 0}, "USER_ID_EMPTY"),
        ({"CHAT_ID": 2043, "USER_ID": "x"}, "USER_ID_EMPTY"),
        ({"CHAT_ID": 2043, "USER_ID": 0, "QUEUE_ID": 5}, "USER_ID_EMPTY"),  # USER_ID chosen
        ({"CHAT_ID": 2043, "QUEUE_ID": -3}, "QUEUE_ID_EMPTY"),
        ({"CHAT_ID": 2043, "QUEUE_ID": ""}, "QUEUE_ID_EMPTY"),
        ({"CHAT_ID": 2043, "QUEUE_ID": 0, "TRANSFER_ID": 16}, "QUEUE_ID_EMPTY"),
        ({"CHAT_ID": 2043}, "TRANSFER_ID_EMPTY"),
        ({"CHAT_ID": 2043, "user_id": 16}, "TRANSFER_ID_EMPTY"),
        ({"CHAT_ID": 2043, "TRANSFER_ID": "queueX"}, "QUEUE_ID_EMPTY"),
        ({"CHAT_ID": 2043, "TRANSFER_ID": "nobody"}, "USER_ID_EMPTY"),
        ({"CHAT_ID": 9999, "USER_ID": 0}, "USER_ID_EMPTY"),  # parameters come first
        # the access check, the only loud refusal
        ({"CHAT_ID": 9999, "USER_ID": 16}, "OPERATOR_WRONG"),  # unknown chat
        ({"CHAT_ID": 9999, "QUEUE_ID": 5}, "OPERATOR_WRONG"),
        ({"CHAT_ID": 2043, "USER_ID": 1}, "OPERATOR_WRONG"),  # the webhook's own user
        ({"CHAT_ID": 2043, "TRANSFER_ID": "1"}, "OPERATOR_WRONG"),
        ({"CHAT_ID": 2043, "USER_ID": 1, "QUEUE_ID": 5}, "OPERATOR_WRONG"),
    ],
)
async def test_transfer_refusals(
    portal: PortalSimulator, http: aiohttp.ClientSession, params: dict[str, Any], code: str
) -> None:
    status, body = await call(http, portal, "imopenlines.operator.transfer", params)
    assert (status, body) == error_body(code)
    assert status == 400
    assert portal.dialogs[2043].owner == 15 and portal.dialogs[2043].line_id == 3
    assert portal.moves == [] and portal.dialogs[2043].system_messages == []


def _lock(portal: PortalSimulator) -> None:
    portal.dialogs[2043].locked = True


@pytest.mark.parametrize(
    ("chat_id", "target", "prepare"),
    [
        (2043, {"USER_ID": 17}, None),  # inactive user
        (2043, {"USER_ID": 99}, None),  # no such user
        (2043, {"USER_ID": 18}, None),  # extranet user
        (2043, {"TRANSFER_ID": 18}, None),
        (2043, {"USER_ID": 19}, None),  # chat bot
        (2043, {"USER_ID": 20}, None),  # connector user
        (2043, {"QUEUE_ID": 77}, None),  # no such line
        (2043, {"TRANSFER_ID": "queue77"}, None),
        (2043, {"USER_ID": 16}, _lock),  # another transfer holds the chat's lock
        (2043, {"QUEUE_ID": 5}, _lock),
        (2045, {"USER_ID": 15}, None),  # finished: no open session
        (2045, {"QUEUE_ID": 3}, None),
    ],
)
async def test_transfer_silently_does_nothing(
    portal: PortalSimulator,
    http: aiohttp.ClientSession,
    chat_id: int,
    target: dict[str, Any],
    prepare: Callable[[PortalSimulator], None] | None,
) -> None:
    if prepare is not None:
        prepare(portal)
    _, before = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": chat_id})
    status, body = await call(
        http, portal, "imopenlines.operator.transfer", {"CHAT_ID": chat_id, **target}
    )
    assert (status, body["result"]) == (200, True)
    _, after = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": chat_id})
    assert after["result"] == before["result"]
    assert portal.moves == [] and portal.dialogs[chat_id].system_messages == []


async def test_transfer_to_operator_and_queue(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(
        http, portal, "imopenlines.operator.transfer", {"CHAT_ID": 2043, "USER_ID": 16}
    )
    assert status == 200 and body["result"] is True and "time" in body
    assert portal.dialogs[2043].owner == 16
    _, got = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    assert got["result"]["owner"] == 16 and got["result"]["manager_list"] == [16]
    assert got["result"]["entity_data_1"].split("|")[7] == "3"  # a user move keeps the line

    status, body = await call(
        http, portal, "imopenlines.operator.transfer", {"CHAT_ID": 2043, "QUEUE_ID": 5}
    )
    assert (status, body["result"]) == (200, True)
    assert (portal.dialogs[2043].owner, portal.dialogs[2043].line_id) == (0, 5)
    _, got = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    assert (got["result"]["owner"], got["result"]["manager_list"]) == (0, [])
    assert got["result"]["entity_data_1"].split("|")[7] == "5"
    assert got["result"]["entity_id"] == "telegram|3|2043|2043"  # the line it was created in
    assert portal.moves == [(2043, "user", 16), (2043, "queue", 5)]
    assert portal.dialogs[2043].system_messages == []


async def test_transfer_id_forms_and_form_body(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    status, _ = await call(
        http, portal, "imopenlines.operator.transfer", {"CHAT_ID": 2043, "TRANSFER_ID": "16"}
    )
    assert status == 200 and portal.dialogs[2043].owner == 16
    status, _ = await call(
        http, portal, "imopenlines.operator.transfer", {"CHAT_ID": 2043, "TRANSFER_ID": 15}
    )
    assert status == 200 and portal.dialogs[2043].owner == 15
    status, _ = await call(
        http,
        portal,
        "imopenlines.operator.transfer",
        {"CHAT_ID": "2043", "TRANSFER_ID": "queue5"},
        form=True,
    )
    assert status == 200 and (portal.dialogs[2043].line_id, portal.dialogs[2043].owner) == (5, 0)
    assert portal.dialogs[2043].entity_id == "telegram|3|2043|2043"
    status, _ = await call(
        http,
        portal,
        "imopenlines.operator.transfer",
        {"CHAT_ID": "2044", "USER_ID": "16"},
        form=True,
    )
    assert status == 200 and portal.dialogs[2044].owner == 16


# --- imopenlines.operator.another.finish ----------------------------------------------------


async def test_another_finish(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    method = "imopenlines.operator.another.finish"
    status, body = await call(http, portal, method, {"CHAT_ID": 2043})
    assert (status, body["result"]) == (200, True)
    assert portal.dialogs[2043].closed and portal.dialogs[2043].owner == 0
    _, got = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    fields = got["result"]["entity_data_1"].split("|")
    assert (fields[5], fields[7]) == ("0", "3")
    assert (got["result"]["owner"], got["result"]["manager_list"]) == (0, [])
    # finishing it again (or the already finished 2045) is a quiet success
    for chat_id in (2043, 2045):
        status, body = await call(http, portal, method, {"CHAT_ID": chat_id})
        assert (status, body["result"]) == (200, True)
    _, again = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    assert again["result"] == got["result"]
    assert portal.dialogs[2045].owner == 16  # finish on a closed dialog changes nothing
    assert await call(http, portal, method, {}) == error_body("CHAT_ID")
    assert await call(http, portal, method, {"CHAT_ID": "x"}) == (
        400,
        {"error": "CHAT_ID", "error_description": "The provided chat identifier is invalid"},
    )
    status, body = await call(http, portal, method, {"CHAT_ID": 9999})
    assert (status, body["error"]) == (400, "ACCESS_DENIED")
    assert "sufficient permissions" in body["error_description"]


# --- routing, auth ---------------------------------------------------------------------------


async def test_auth_and_routing(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    base = portal.url.rsplit("/rest/", 1)[0]
    no_auth = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
    for url in (
        f"{base}/rest/1/wrongcode/imopenlines.dialog.get.json",
        f"{base}/rest/2/{CODE}/imopenlines.dialog.get.json",
        f"{base}/rest/imopenlines.dialog.get.json",
    ):
        async with http.post(url, json={"CHAT_ID": 2043}) as resp:
            assert resp.status == 401 and await resp.json() == no_auth
    async with http.post(f"{portal.url}imopenlines.nope.json", json={}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "ERROR_METHOD_NOT_FOUND"
    async with http.get(f"{portal.url}imopenlines.dialog.get?CHAT_ID=2043") as resp:
        assert resp.status == 200 and (await resp.json())["result"]["id"] == 2043
    async with http.post(f"{portal.url}imopenlines.dialog.get", json={"CHAT_ID": 2043}) as resp:
        assert resp.status == 200
    assert [c.method for c in portal.calls] == ["imopenlines.nope"] + ["imopenlines.dialog.get"] * 2


# --- OAuth application calls -----------------------------------------------------------------

NO_AUTH = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
EXPIRED = {"error": "expired_token", "error_description": "The access token provided has expired"}


@pytest.fixture
async def oauth_portal(clock: FakeClock) -> AsyncIterator[PortalSimulator]:
    async with make_portal(clock, oauth_tokens={"tok-valid"}) as sim:
        yield sim


async def oauth_call(
    http: aiohttp.ClientSession, portal: PortalSimulator, method: str, params: dict[str, Any]
) -> tuple[int, Any]:
    """POST an OAuth application call (``auth`` in the JSON body)."""
    async with http.post(f"{portal.oauth_url}{method}.json", json=params) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_oauth_valid_token(
    oauth_portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal = oauth_portal
    assert portal.oauth_enabled
    assert portal.oauth_url == f"{portal.base_url}/rest/"
    assert portal.oauth_url.startswith("http://127.0.0.1:") and portal.oauth_url.endswith("/rest/")
    status, body = await oauth_call(
        http, portal, "imopenlines.dialog.get", {"auth": "tok-valid", "CHAT_ID": 2043}
    )
    assert status == 200 and body["result"]["id"] == 2043
    status, body = await oauth_call(
        http,
        portal,
        "imopenlines.operator.transfer",
        {"auth": "tok-valid", "CHAT_ID": 2043, "TRANSFER_ID": 16},
    )
    assert (status, body["result"]) == (200, True)
    assert portal.dialogs[2043].owner == 16
    # the token in the query string or in a form body works too
    url = f"{portal.oauth_url}imopenlines.dialog.get.json"
    async with http.post(f"{url}?auth=tok-valid", json={"CHAT_ID": 2043}) as resp:
        assert resp.status == 200
    async with http.post(url, data={"auth": "tok-valid", "CHAT_ID": "2043"}) as resp:
        assert resp.status == 200 and (await resp.json())["result"]["owner"] == 16
    async with http.get(f"{portal.oauth_url}user.get?auth=tok-valid") as resp:
        assert resp.status == 200 and (await resp.json())["total"] == 5
    # a batch runs its commands as usual
    status, body = await oauth_call(
        http, portal, "batch", {"auth": "tok-valid", "cmd": {"a": "user.get"}}
    )
    assert status == 200, body
    assert len(body["result"]["result"]["a"]) == 5
    # added tokens work, unknown ones error
    portal.add_token("tok-new")
    status, _ = await oauth_call(http, portal, "user.get", {"auth": "tok-new"})
    assert status == 200


async def test_oauth_expired_token(
    oauth_portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal = oauth_portal
    portal.expire("tok-valid")
    assert "tok-valid" in portal.expired_tokens
    assert portal.oauth_tokens is not None and "tok-valid" not in portal.oauth_tokens
    for _ in range(2):
        status, body = await oauth_call(
            http, portal, "imopenlines.operator.transfer", {"auth": "tok-valid", "CHAT_ID": 2043}
        )
        assert (status, body) == (401, EXPIRED)
    assert portal.calls == []  # refused before any method
    # a token put into expired_tokens directly is refused the same way
    portal.expired_tokens.add("tok-other")
    assert await oauth_call(http, portal, "user.get", {"auth": "tok-other"}) == (401, EXPIRED)
    # add_token makes an expired token valid again
    portal.add_token("tok-valid")
    status, _ = await oauth_call(http, portal, "user.get", {"auth": "tok-valid"})
    assert status == 200


async def test_oauth_unknown_or_missing_token(
    oauth_portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal = oauth_portal
    for params in (
        {"auth": "tok-unknown", "CHAT_ID": 2043},
        {"CHAT_ID": 2043},
        {"auth": "", "CHAT_ID": 2043},
        {"auth": ["tok-valid"], "CHAT_ID": 2043},
    ):
        status, body = await oauth_call(http, portal, "imopenlines.dialog.get", params)
        assert (status, body) == (401, NO_AUTH), params
    # the webhook's code is no access token
    assert await oauth_call(http, portal, "user.get", {"auth": CODE}) == (401, NO_AUTH)
    assert portal.calls == []


async def test_oauth_auth_not_recorded(
    oauth_portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal = oauth_portal
    await oauth_call(http, portal, "imopenlines.dialog.get", {"auth": "tok-valid", "CHAT_ID": 2043})
    async with http.post(
        f"{portal.oauth_url}imopenlines.dialog.get.json?auth=tok-valid", json={"CHAT_ID": 2043}
    ) as resp:
        assert resp.status == 200
    assert len(portal.calls) == 2
    for recorded in portal.calls:
        assert recorded.method == "imopenlines.dialog.get"
        assert recorded.params == {"CHAT_ID": 2043}
        assert "auth" not in recorded.params
        assert recorded.token == "tok-valid"


async def test_oauth_faults_apply(
    oauth_portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal = oauth_portal
    portal.inject("user.get", Fault.error("expired_token"))
    assert await oauth_call(http, portal, "user.get", {"auth": "tok-valid"}) == (401, EXPIRED)
    status, _ = await oauth_call(http, portal, "user.get", {"auth": "tok-valid"})
    assert status == 200


async def test_oauth_alongside_webhook(
    oauth_portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    portal = oauth_portal
    status, body = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    assert status == 200 and body["result"]["id"] == 2043
    status, _ = await oauth_call(
        http, portal, "imopenlines.dialog.get", {"auth": "tok-valid", "CHAT_ID": 2043}
    )
    assert status == 200
    # a webhook call's own "auth" field is left alone (it is just a parameter there)
    status, _ = await call(http, portal, "user.get", {"auth": "whatever"})
    assert status == 200
    assert [c.token for c in portal.calls] == [None, "tok-valid", None]
    assert portal.calls[2].params == {"auth": "whatever"}
    # a wrong webhook code is still refused
    base = portal.base_url
    async with http.post(f"{base}/rest/1/wrongcode/user.get.json", json={}) as resp:
        assert resp.status == 401 and await resp.json() == NO_AUTH


async def test_oauth_off_by_default(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    assert not portal.oauth_enabled and portal.oauth_tokens is None
    assert await oauth_call(http, portal, "user.get", {"auth": "tok-valid"}) == (401, NO_AUTH)
    portal.expire("tok-valid")  # OAuth still off: no expired_token answers
    assert await oauth_call(http, portal, "user.get", {"auth": "tok-valid"}) == (401, NO_AUTH)
    portal.add_token("tok-on")  # switches OAuth on
    assert portal.oauth_enabled
    status, _ = await oauth_call(http, portal, "user.get", {"auth": "tok-on"})
    assert status == 200


async def test_oauth_rate_limited(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock, burst=1, leak_per_s=0.0, oauth_tokens={"t"}) as portal:
        for _ in range(2):
            status, _ = await oauth_call(http, portal, "user.get", {"auth": "t"})
            assert status == 200
        status, body = await oauth_call(http, portal, "user.get", {"auth": "t"})
        assert (status, body) == error_body("QUERY_LIMIT_EXCEEDED")
        assert portal.rejected_by_limit == 1


# --- leaky bucket -----------------------------------------------------------------------------


async def test_leaky_bucket(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock, burst=50, leak_per_s=2.0) as portal:
        for _ in range(51):
            status, _ = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
            assert status == 200
        for _ in range(3):
            assert await call(
                http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043}
            ) == error_body("QUERY_LIMIT_EXCEEDED")
        assert portal.rejected_by_limit == 3
        assert len(portal.calls) == 51  # refused requests never reach a method
        assert error_body("QUERY_LIMIT_EXCEEDED")[0] == 503

        clock.now += 1.0  # drains 2: counter 51 -> 49
        for _ in range(2):
            status, _ = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
            assert status == 200
        status, _ = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
        assert status == 503
        clock.now += 60.0
        status, _ = await call(http, portal, "batch", {"cmd": {"a": "user.get"}})
        assert status == 200
        assert portal.rejected_by_limit == 4


# --- batch ------------------------------------------------------------------------------------


async def test_batch_mixed(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await call(
        http,
        portal,
        "batch",
        {
            "halt": 0,
            "cmd": {
                "t1": "imopenlines.operator.transfer?CHAT_ID=2043&USER_ID=16",
                "t2": "imopenlines.operator.transfer?CHAT_ID=9999&USER_ID=17",
                "d": "imopenlines.dialog.get?CHAT_ID=2043",
                "n": "batch?cmd[x]=user.get",
                "u": "no.such.method",
            },
        },
    )
    assert status == 200
    res = body["result"]
    assert res["result"] == {"t1": True, "d": res["result"]["d"]}
    assert res["result"]["d"]["owner"] == 16
    assert res["result_error"]["t2"] == error_body("OPERATOR_WRONG")[1]
    assert res["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert res["result_error"]["u"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert res["result_total"] == [] and res["result_next"] == []
    assert set(res["result_time"]) == {"t1", "d"}
    assert "time" in body
    inner = [c for c in portal.calls if c.in_batch]
    assert [c.method for c in inner] == [
        "imopenlines.operator.transfer",
        "imopenlines.operator.transfer",
        "imopenlines.dialog.get",
        "batch",
        "no.such.method",
    ]
    assert inner[0].params == {"CHAT_ID": "2043", "USER_ID": "16"}
    assert len(portal.calls_to("imopenlines.operator.transfer")) == 2
    assert len(portal.calls_to("batch")) == 2  # the outer call and the nested attempt


async def test_batch_halt_list_and_form(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(
        http,
        portal,
        "batch",
        {
            "halt": 1,
            "cmd": [
                "imopenlines.dialog.get?CHAT_ID=2043",
                "imopenlines.operator.transfer?CHAT_ID=9999&USER_ID=16",
                "imopenlines.operator.transfer?CHAT_ID=2043&USER_ID=16",
            ],
        },
    )
    assert status == 200
    assert list(body["result"]["result"]) == ["0"]
    assert list(body["result"]["result_error"]) == ["1"]
    assert portal.dialogs[2043].owner == 15  # command "2" never ran

    status, body = await call(
        http,
        portal,
        "batch",
        {"halt": "0", "cmd[a]": "imopenlines.operator.transfer?CHAT_ID=2043&TRANSFER_ID=queue5"},
        form=True,
    )
    assert status == 200 and body["result"]["result"] == {"a": True}
    assert portal.dialogs[2043].line_id == 5

    status, body = await call(http, portal, "batch", {})
    assert body["result"] == {
        "result": [],
        "result_error": [],
        "result_total": [],
        "result_next": [],
        "result_time": [],
    }


async def test_batch_too_long(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    cmd = {f"c{i}": "imopenlines.dialog.get?CHAT_ID=2043" for i in range(53)}
    status, body = await call(http, portal, "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    assert len(body["result"]["result"]) == 50
    assert set(body["result"]["result_error"]) == {"c50", "c51", "c52"}
    assert body["result"]["result_error"]["c50"] == error_body("ERROR_BATCH_LENGTH_EXCEEDED")[1]
    assert len(portal.calls_to("imopenlines.dialog.get")) == 50
    assert portal.bucket_level == 1  # one HTTP request, one drop in the bucket


# --- faults -----------------------------------------------------------------------------------


async def test_fault_error_bodies(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    portal.inject("imopenlines.operator.transfer", Fault.error("QUERY_LIMIT_EXCEEDED"))
    portal.inject(None, Fault.error("OPERATOR_WRONG"), times=2)
    # A dialog.get skips the transfer-only fault and takes the first "any method" one.
    assert await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043}) == error_body(
        "OPERATOR_WRONG"
    )
    params = {"CHAT_ID": 2043, "USER_ID": 16}
    assert await call(http, portal, "imopenlines.operator.transfer", params) == (
        503,
        {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
    )
    assert await call(http, portal, "imopenlines.operator.transfer", params) == error_body(
        "OPERATOR_WRONG"
    )
    assert portal.pending_faults == 0
    assert portal.dialogs[2043].owner == 15  # none of the faulted calls ran
    assert not any(c.applied for c in portal.calls)
    assert portal.rejected_by_limit == 0  # injected answers are not bucket refusals
    status, body = await call(http, portal, "imopenlines.operator.transfer", params)
    assert (status, body["result"]) == (200, True)
    assert Fault.error("ACCESS_DENIED").status == 403
    assert Fault.error("ACCESS_DENIED", status=400).status == 400


async def test_fault_raw_bodies(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    portal.inject(None, Fault.proxy_page(502))
    portal.inject(None, Fault.raw(200, b"", "application/json"))
    portal.inject(None, Fault.json(200, {"result": False}))
    url = f"{portal.url}imopenlines.operator.transfer.json"
    params = {"CHAT_ID": 2043, "USER_ID": 16}
    async with http.post(url, json=params) as resp:
        assert resp.status == 502 and resp.content_type == "text/html"
        assert "502 Bad Gateway" in await resp.text()
    async with http.post(url, json=params) as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with http.post(url, json=params) as resp:
        assert resp.status == 200 and await resp.json() == {"result": False}
    assert portal.dialogs[2043].owner == 15
    assert [c.status for c in portal.calls] == [502, 200, 200]


async def test_fault_apply_then_504(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    portal.inject("imopenlines.operator.transfer", Fault.apply_then_fail(504))
    async with http.post(
        f"{portal.url}imopenlines.operator.transfer.json", json={"CHAT_ID": 2043, "USER_ID": 16}
    ) as resp:
        assert resp.status == 504 and resp.content_type == "text/html"
        assert "Gateway Time-out" in await resp.text()
    assert portal.dialogs[2043].owner == 16  # the transfer happened anyway
    (recorded,) = portal.calls_to("imopenlines.operator.transfer")
    assert recorded.applied and recorded.status == 504 and "nginx" in recorded.body


async def test_fault_drop(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    portal.inject(None, Fault.drop())
    portal.inject(None, Fault.drop(apply=True))
    params = {"CHAT_ID": 2043, "USER_ID": 16}
    with pytest.raises(aiohttp.ClientError):
        await call(http, portal, "imopenlines.operator.transfer", params)
    assert portal.dialogs[2043].owner == 15
    with pytest.raises(aiohttp.ClientError):
        await call(http, portal, "imopenlines.operator.transfer", params)
    assert portal.dialogs[2043].owner == 16
    assert [(c.status, c.body, c.applied) for c in portal.calls] == [
        (0, None, False),
        (0, None, True),
    ]
    status, _ = await call(http, portal, "imopenlines.dialog.get", {"CHAT_ID": 2043})
    assert status == 200  # the portal keeps serving


async def test_fault_delay(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    short = aiohttp.ClientTimeout(total=0.15)
    url = f"{portal.url}imopenlines.operator.transfer.json"
    portal.inject(None, Fault.delay(5.0, apply=False))
    with pytest.raises(TimeoutError):
        async with http.post(url, json={"CHAT_ID": 2043, "USER_ID": 16}, timeout=short):
            pass
    assert portal.dialogs[2043].owner == 15

    portal.inject(None, Fault.delay(5.0))  # slow success: applied, answered late
    with pytest.raises(TimeoutError):
        async with http.post(url, json={"CHAT_ID": 2043, "USER_ID": 16}, timeout=short):
            pass
    assert portal.dialogs[2043].owner == 16

    portal.inject(None, Fault.delay(0.05))  # short enough to wait for: the real answer
    status, body = await call(
        http, portal, "imopenlines.operator.transfer", {"CHAT_ID": 2043, "QUEUE_ID": 5}
    )
    assert (status, body["result"]) == (200, True)


async def test_latency(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async with make_portal(clock, latency_s=5.0) as portal:
        with pytest.raises(TimeoutError):
            await http.post(
                f"{portal.url}imopenlines.dialog.get.json",
                json={"CHAT_ID": 2043},
                timeout=aiohttp.ClientTimeout(total=0.1),
            )


# --- helpers ----------------------------------------------------------------------------------


def test_error_body_table() -> None:
    expected = {
        "CHAT_ID_EMPTY": 400,
        "USER_ID_EMPTY": 400,
        "QUEUE_ID_EMPTY": 400,
        "TRANSFER_ID_EMPTY": 400,
        "OPERATOR_WRONG": 400,
        "ACCESS_ERROR": 400,
        "IM_NOT_INSTALLED": 400,
        "CHAT_ID": 400,
        "CHAT_TYPE": 400,
        "USER_ID": 400,
        "ACCESS_DENIED": 403,
        "QUERY_LIMIT_EXCEEDED": 503,
        "OPERATION_TIME_LIMIT": 429,
        "OVERLOAD_LIMIT": 503,
        "INTERNAL_SERVER_ERROR": 500,
        "ERROR_UNEXPECTED_ANSWER": 500,
        "PORTAL_DELETED": 500,
        "NO_AUTH_FOUND": 401,
        "expired_token": 401,
        "INVALID_CREDENTIALS": 403,
        "insufficient_scope": 403,
        "user_access_error": 403,
        "INVALID_REQUEST": 400,
        "ERROR_BATCH_LENGTH_EXCEEDED": 400,
        "ERROR_BATCH_METHOD_NOT_ALLOWED": 405,
        "ERROR_METHOD_NOT_FOUND": 404,
        "ERROR_MANIFEST_IS_NOT_AVAILABLE": 404,
    }
    for code, status in expected.items():
        got_status, body = error_body(code)
        assert got_status == status, code
        assert body["error"] == code and body["error_description"]
    assert error_body("ACCESS_DENIED", status=400)[1]["error_description"].startswith(
        "You cannot open this conversation"
    )
    assert error_body("TRANSFER_ID_EMPTY")[1]["error_description"] == (
        "Queue ID or User ID can't be empty"
    )
    with pytest.raises(KeyError):
        error_body("NOT_A_CODE")


def test_parse_php_query() -> None:
    assert parse_php_query("CHAT_ID=2043&USER_ID=15") == {"CHAT_ID": "2043", "USER_ID": "15"}
    assert parse_php_query("cmd[a]=x%3Fy%3D1&cmd[b]=z&l[]=1&l[]=2") == {
        "cmd": {"a": "x?y=1", "b": "z"},
        "l": {"0": "1", "1": "2"},
    }


async def test_directory_methods(portal: PortalSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, portal, "user.get", {"FILTER": {"ACTIVE": True}})
    assert status == 200 and body["total"] == 4 and "next" not in body
    assert [u["ID"] for u in body["result"]] == ["1", "15", "16", "18"]
    assert body["result"][1] == {
        "ID": "15",
        "ACTIVE": True,
        "NAME": "Anna",
        "LAST_NAME": "Petrova",
        "IS_ONLINE": "Y",
        "USER_TYPE": "employee",
    }
    assert body["result"][3]["USER_TYPE"] == "extranet"
    status, body = await call(
        http, portal, "imopenlines.config.list.get", {"OPTIONS": {"QUEUE": "Y"}}
    )
    assert status == 200
    assert body["result"][0]["ID"] == "3" and body["result"][0]["QUEUE"] == ["15", "16"]
    assert body["result"][0]["QUEUE_USERS_FIELDS"]["15"]["USER_NAME"] == "Anna Petrova"
    status, body = await call(http, portal, "imopenlines.config.list.get", {"PARAMS": "bad"})
    assert (status, body["error"]) == (400, "INVALID_FORMAT")
