"""OAuth application auth: refresh once on expired_token, persist the new pair, never leak."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.bitrix24.client import BitrixClient
from bot.bitrix24.errors import BitrixError
from bot.config import Bitrix24Settings
from bot.messages import Messages
from bot.sandbox.oauth import FakeOAuthServer
from bot.sandbox.portal import PortalSimulator
from tests.conftest import BOB, make_portal

CLIENT_ID, CLIENT_SECRET = "local.app.42", "Cl1entS3cretNeverShown"
FIRST_ACCESS, FIRST_REFRESH = "first-access-token-0000", "first-refresh-token-0000"


@asynccontextmanager
async def oauth_stack(tmp_path: Path) -> AsyncIterator[tuple[PortalSimulator, FakeOAuthServer]]:
    portal = make_portal(oauth_tokens={FIRST_ACCESS})
    async with portal:
        server = FakeOAuthServer(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token=FIRST_REFRESH,
            portal=portal,
        )
        async with server:
            yield portal, server


def settings(portal: PortalSimulator, server: FakeOAuthServer, tokens: Path) -> Bitrix24Settings:
    return Bitrix24Settings.model_validate(
        {
            "oauth": {
                "portal": portal.base_url,
                "server": server.url,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "access_token": FIRST_ACCESS,
                "refresh_token": FIRST_REFRESH,
                "tokens_file": str(tokens),
            },
            "timeout_s": 2,
            "deadline_s": 4,
            "rate_per_s": 1000,
            "burst": 1000,
        }
    )


async def test_an_expired_token_is_refreshed_once_and_the_call_repeated(tmp_path: Path) -> None:
    tokens = tmp_path / "bitrix24-tokens.json"
    async with oauth_stack(tmp_path) as (portal, server):
        portal.expire(FIRST_ACCESS)
        async with BitrixClient(settings(portal, server, tokens)) as client:
            dialogs = await asyncio.gather(*(client.dialog(2043) for _ in range(5)))
        assert all(d.owner_id == BOB for d in dialogs)
        assert server.refreshes == 1, "concurrent calls wait for one refresh"
        saved = json.loads(tokens.read_text())
        assert saved["refresh_token"] == server.refresh_token != FIRST_REFRESH
        assert saved["access_token"] == server.access_token
        assert oct(os.stat(tokens).st_mode & 0o777) == "0o600"
        assert not [name for name in os.listdir(tmp_path) if name.startswith(".tokens-")]


async def test_a_restart_uses_the_saved_tokens_not_the_used_up_ones(tmp_path: Path) -> None:
    tokens = tmp_path / "bitrix24-tokens.json"
    async with oauth_stack(tmp_path) as (portal, server):
        portal.expire(FIRST_ACCESS)
        async with BitrixClient(settings(portal, server, tokens)) as client:
            await client.dialog(2043)
        async with BitrixClient(settings(portal, server, tokens)) as again:  # "after a restart"
            await again.dialog(2044)
            server.expire_access_token()
            await again.dialog(2045)
        assert server.refreshes == 2, "the saved refresh token still worked"


async def test_a_revoked_authorization_says_the_app_must_be_authorized_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with oauth_stack(tmp_path) as (portal, server):
        portal.expire(FIRST_ACCESS)
        server.revoke()
        client = BitrixClient(settings(portal, server, tmp_path / "t.json"))
        async with client:
            with pytest.raises(BitrixError) as caught:
                await client.dialog(2043)
        assert caught.value.code == "invalid_grant"
        text = Messages(admin_contact="@it_ops").error("invalid_grant", 400, "en")
        assert "must be authorized again" in text
        shown = f"{caught.value} {caught.value!r} {client!r} " + " ".join(
            r.getMessage() for r in caplog.records
        )
        for secret in (CLIENT_SECRET, FIRST_ACCESS, FIRST_REFRESH):
            assert secret not in shown


def test_oauth_in_config_replaces_the_webhook_and_keeps_secrets_masked(tmp_path: Path) -> None:
    from bot.config import load_config

    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "bitrix24:\n"
        "  oauth:\n"
        "    portal: https://yourcompany.bitrix24.ru\n"
        f"    client_id: {CLIENT_ID}\n"
        f"    client_secret: {CLIENT_SECRET}\n"
        f"    refresh_token: {FIRST_REFRESH}\n"
        "telegram: {token: '123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}\n",
        encoding="utf-8",
    )
    config = load_config(config_file, {})
    assert config.missing_secrets() == []
    oauth = config.bitrix24.oauth
    assert oauth is not None and oauth.tokens_file == str(tmp_path / "bitrix24-tokens.json")
    assert CLIENT_SECRET not in repr(config) and FIRST_REFRESH not in str(config)
    assert "OAuth app local.app.42" in repr(BitrixClient(config.bitrix24))
