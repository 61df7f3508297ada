"""Tests of the fake Bitrix24 OAuth server over real HTTP with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.sandbox.oauth import FakeOAuthServer
from bot.sandbox.portal import PortalSimulator, SimDialog, SimOperator, SimQueue

CLIENT_ID = "local.65f0a1b2c3d4e5.12345678"
CLIENT_SECRET = "s3cr3tClientS3cr3t"
FIRST_REFRESH = "first-refresh-token"
DOMAIN = "example.bitrix24.ru"

RESPONSE_KEYS = {
    "access_token",
    "refresh_token",
    "expires",
    "expires_in",
    "client_endpoint",
    "server_endpoint",
    "domain",
    "member_id",
    "scope",
    "status",
    "user_id",
}


def make_portal() -> PortalSimulator:
    """A tiny portal with OAuth on and no valid token yet."""
    return PortalSimulator(
        operators=[SimOperator(1, "Admin Root"), SimOperator(15, "Anna Petrova")],
        queues=[SimQueue(3, "Sales")],
        dialogs=[SimDialog(2043, 501, "Green Guest", owner=15, line_id=3)],
        oauth_tokens=set(),
    )


@pytest.fixture
async def portal() -> AsyncIterator[PortalSimulator]:
    async with make_portal() as sim:
        yield sim


@pytest.fixture
async def server(portal: PortalSimulator) -> AsyncIterator[FakeOAuthServer]:
    async with FakeOAuthServer(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=FIRST_REFRESH,
        portal=portal,
        domain=DOMAIN,
    ) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        yield session


def query(refresh_token: str | None = FIRST_REFRESH, **overrides: str | None) -> dict[str, str]:
    """The refresh query; an override of None leaves that parameter out."""
    params: dict[str, str | None] = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
        **overrides,
    }
    return {key: value for key, value in params.items() if value is not None}


async def refresh(
    http: aiohttp.ClientSession, server: FakeOAuthServer, params: dict[str, str]
) -> tuple[int, Any]:
    """GET the token endpoint like a client would; return (status, decoded JSON body)."""
    async with http.get(f"{server.url}/oauth/token/", params=params) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_refresh_gives_new_tokens_that_work(
    server: FakeOAuthServer, portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith("/")
    assert server.token_url == f"{server.url}/oauth/token/"
    before = int(time.time())
    status, body = await refresh(http, server, query())
    assert status == 200
    assert set(body) == RESPONSE_KEYS
    assert body["expires_in"] == 3600
    assert before + 3600 <= body["expires"] <= int(time.time()) + 3600
    assert body["client_endpoint"] == portal.oauth_url
    assert body["server_endpoint"] == f"{server.url}/rest/"
    assert body["domain"] == DOMAIN
    assert isinstance(body["member_id"], str) and body["member_id"]
    assert (body["scope"], body["status"], body["user_id"]) == ("imopenlines", "L", 1)
    access, new_refresh = body["access_token"], body["refresh_token"]
    assert new_refresh != FIRST_REFRESH and access != new_refresh
    assert (server.access_token, server.refresh_token, server.refreshes) == (
        access,
        new_refresh,
        1,
    )
    assert server.requests == [query()]

    # the new access token works at the portal's client_endpoint
    url = f"{body['client_endpoint']}imopenlines.dialog.get.json"
    async with http.post(url, json={"auth": access, "CHAT_ID": 2043}) as resp:
        assert resp.status == 200
        assert (await resp.json())["result"]["id"] == 2043
    assert portal.calls[-1].token == access

    # the next refresh (with the new refresh token) gives yet another pair
    status, second = await refresh(http, server, query(new_refresh))
    assert status == 200
    assert second["access_token"] not in (access, new_refresh)
    assert second["refresh_token"] not in (access, new_refresh, FIRST_REFRESH)
    assert server.refreshes == 2
    async with http.post(url, json={"auth": second["access_token"], "CHAT_ID": 2043}) as resp:
        assert resp.status == 200


async def test_old_refresh_token_refused(
    server: FakeOAuthServer, http: aiohttp.ClientSession
) -> None:
    status, body = await refresh(http, server, query())
    assert status == 200
    for stale in (FIRST_REFRESH, "never-issued"):
        status, error = await refresh(http, server, query(stale))
        assert status == 400
        assert error["error"] == "invalid_grant"
        assert set(error) == {"error", "error_description"} and error["error_description"]
    assert server.refreshes == 1
    assert server.refresh_token == body["refresh_token"]  # a failed try spends nothing
    status, _ = await refresh(http, server, query(body["refresh_token"]))
    assert status == 200


async def test_wrong_client_credentials(
    server: FakeOAuthServer, http: aiohttp.ClientSession
) -> None:
    for params in (query(client_secret="wrong"), query(client_id="local.other")):
        status, body = await refresh(http, server, params)
        assert status == 401
        assert body["error"] == "invalid_client" and body["error_description"]
    assert server.refreshes == 0
    status, _ = await refresh(http, server, query())  # the refresh token is still good
    assert status == 200


@pytest.mark.parametrize(
    "params",
    [
        query(grant_type=None),
        query(client_id=None),
        query(client_secret=None),
        query(refresh_token=None),
        query(refresh_token=""),
        query(grant_type="authorization_code"),
        {},
    ],
)
async def test_invalid_request(
    server: FakeOAuthServer, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    status, body = await refresh(http, server, params)
    assert status == 400
    assert body["error"] == "invalid_request" and body["error_description"]
    assert server.refreshes == 0 and server.requests == [params]


async def test_revoke_and_expire_helpers(
    server: FakeOAuthServer, portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(RuntimeError):
        server.expire_access_token()  # nothing issued yet
    status, body = await refresh(http, server, query())
    assert status == 200
    server.expire_access_token()
    url = f"{portal.oauth_url}user.get.json"
    async with http.post(url, json={"auth": body["access_token"]}) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "expired_token"
    server.revoke()
    status, error = await refresh(http, server, query(body["refresh_token"]))
    assert (status, error["error"]) == (400, "invalid_grant")


async def test_post_form_and_no_portal(http: aiohttp.ClientSession) -> None:
    async with FakeOAuthServer(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token="r1", domain=DOMAIN
    ) as server:
        async with http.post(f"{server.url}/oauth/token", data=query("r1")) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["client_endpoint"] == f"https://{DOMAIN}/rest/"


async def test_concurrent_refreshes_one_wins(
    portal: PortalSimulator, http: aiohttp.ClientSession
) -> None:
    async with FakeOAuthServer(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=FIRST_REFRESH,
        portal=portal,
        delay_s=0.2,
    ) as server:
        started = time.monotonic()
        results = await asyncio.gather(*(refresh(http, server, query()) for _ in range(3)))
        assert time.monotonic() - started >= 0.2
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 400, 400]
        assert server.refreshes == 1 and len(server.requests) == 3
        assert portal.oauth_tokens == {server.access_token}


async def test_close_releases_delayed_answer(http: aiohttp.ClientSession) -> None:
    server = FakeOAuthServer(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=FIRST_REFRESH,
        delay_s=30.0,
    )
    await server.start()
    pending = asyncio.ensure_future(refresh(http, server, query()))
    for _ in range(200):  # wait for the request to arrive
        if server.requests:
            break
        await asyncio.sleep(0.01)
    # the refresh token is spent on arrival, before the (held) answer is sent
    assert server.refreshes == 1 and server.refresh_token != FIRST_REFRESH
    started = time.monotonic()
    await server.close()
    status, body = await asyncio.wait_for(pending, 2.0)
    assert time.monotonic() - started < 2.0
    assert status == 200 and body["refresh_token"] == server.refresh_token
