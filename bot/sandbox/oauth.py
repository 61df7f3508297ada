"""A fake Bitrix24 OAuth authorization server (what ``oauth.bitrix.info`` does for refreshes).

It serves ``GET /oauth/token/?grant_type=refresh_token&client_id=…&client_secret=…&refresh_token=…``
on 127.0.0.1 and answers like Bitrix24's authorization server: a new access token and a new
refresh token at every refresh; the refresh token just used stops working (Bitrix24 replaces it
at each refresh), so a second refresh with the same token gets ``400 invalid_grant``.  Given a
:class:`~bot.sandbox.portal.PortalSimulator`, each new access token is registered there with
``add_token`` so it works at once for ``/rest/<method>.json`` calls.  Older access tokens stay
valid at the portal until a test expires them (``expire_access_token`` or ``portal.expire``),
as real ones live out their hour.

Errors (``{"error", "error_description"}`` bodies):

* a missing parameter, or a ``grant_type`` other than ``refresh_token``: ``400 invalid_request``;
* a wrong ``client_id`` or ``client_secret``: ``401 invalid_client``;
* an unknown, already used or revoked refresh token: ``400 invalid_grant``.

A refresh token is consumed the moment its request arrives; ``delay_s`` then holds the answer,
so concurrent refreshes with the same token (one wins, the others get ``invalid_grant``) and a
refresh whose answer is lost to a client timeout (the token is spent all the same) can be
tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from bot.sandbox.loopback import serve
from bot.sandbox.portal import PortalSimulator, parse_php_query

__all__ = ["ACCESS_TOKEN_TTL_S", "FakeOAuthServer"]

ACCESS_TOKEN_TTL_S: Final = 3600
TOKEN_PATH: Final = "/oauth/token/"
_REQUIRED: Final = ("grant_type", "client_id", "client_secret", "refresh_token")


def _new_token() -> str:
    """A fresh opaque token (70 hex characters, like Bitrix24's)."""
    return secrets.token_hex(35)


class FakeOAuthServer:
    """An in-memory Bitrix24 OAuth server for the ``refresh_token`` grant, on localhost.

    ``refresh_token`` is the first valid refresh token; after each successful refresh only the
    newest one is valid (``refresh_token`` attribute).  ``access_token`` is the newest access
    token issued (None before the first refresh).  ``refreshes`` counts successful refreshes;
    ``requests`` keeps the parameters of every token request (failed ones included), in order.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        portal: PortalSimulator | None = None,
        domain: str = "sandbox.bitrix24.ru",
        member_id: str | None = None,
        user_id: int = 1,
        scope: str = "imopenlines",
        delay_s: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token: str | None = refresh_token
        self.access_token: str | None = None
        self.portal = portal
        self.domain = domain
        self.member_id = member_id or hashlib.md5(domain.encode()).hexdigest()
        self.user_id = user_id
        self.scope = scope
        self.delay_s = delay_s
        self.refreshes = 0
        self.requests: list[dict[str, Any]] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self.app = web.Application()
        for path in (TOKEN_PATH, TOKEN_PATH.rstrip("/")):
            self.app.router.add_get(path, self._token, allow_head=False)
            self.app.router.add_post(path, self._token)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port); return the base URL.

        The base URL is ``http://127.0.0.1:PORT`` without a trailing slash, like
        ``https://oauth.bitrix.info``: the token endpoint is ``<base>/oauth/token/``.
        """
        if self._runner is not None:
            return self.url
        self._closing = asyncio.Event()
        self._runner, self._url = await serve(self.app, host, port)
        return self._url

    async def close(self) -> None:
        """Stop serving; answers held by ``delay_s`` are released at once."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeOAuthServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The base URL ``http://127.0.0.1:PORT`` (after ``start``)."""
        if self._url is None:
            raise RuntimeError("the OAuth server is not started")
        return self._url

    @property
    def token_url(self) -> str:
        """The token endpoint ``http://127.0.0.1:PORT/oauth/token/`` (after ``start``)."""
        return f"{self.url}{TOKEN_PATH}"

    @property
    def server_endpoint(self) -> str:
        """What answers carry as ``server_endpoint``: ``http://127.0.0.1:PORT/rest/``."""
        return f"{self.url}/rest/"

    # --- test helpers ----------------------------------------------------------------------

    def revoke(self) -> None:
        """Revoke the current refresh token (the admin must authorize the app again)."""
        self.refresh_token = None

    def expire_access_token(self) -> None:
        """Expire the newest access token at the portal (needs a portal and one refresh)."""
        if self.portal is None or self.access_token is None:
            raise RuntimeError("no portal, or no access token issued yet")
        self.portal.expire(self.access_token)

    # --- HTTP ------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        """Serve the token endpoint (query string, or a urlencoded POST body)."""
        params = parse_php_query(request.query_string)
        if request.method == "POST" and request.body_exists:
            raw = await request.read()
            params.update(parse_php_query(raw.decode("utf-8", "replace")))
        self.requests.append(dict(params))
        status, body = self._grant(params)
        await self._pause(self.delay_s)
        return web.Response(
            status=status,
            body=json.dumps(body).encode(),
            content_type="application/json",
            charset="utf-8",
        )

    def _grant(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Check one token request; on success issue (and register) a new token pair."""
        missing = [
            name for name in _REQUIRED if not isinstance(params.get(name), str) or not params[name]
        ]
        if missing:
            return 400, {
                "error": "invalid_request",
                "error_description": f"Missing required parameter: {', '.join(missing)}",
            }
        if params["grant_type"] != "refresh_token":
            return 400, {
                "error": "invalid_request",
                "error_description": "Unsupported grant_type (only refresh_token here)",
            }
        if params["client_id"] != self.client_id or params["client_secret"] != self.client_secret:
            return 401, {
                "error": "invalid_client",
                "error_description": "The client credentials are invalid",
            }
        if self.refresh_token is None or params["refresh_token"] != self.refresh_token:
            return 400, {
                "error": "invalid_grant",
                "error_description": "The refresh token is invalid, expired or revoked",
            }
        access, refresh = _new_token(), _new_token()
        self.access_token, self.refresh_token = access, refresh
        self.refreshes += 1
        client_endpoint = f"https://{self.domain}/rest/"
        if self.portal is not None:
            self.portal.add_token(access)
            with contextlib.suppress(RuntimeError):  # a portal not serving yet
                client_endpoint = self.portal.oauth_url
        return 200, {
            "access_token": access,
            "expires": int(time.time()) + ACCESS_TOKEN_TTL_S,
            "expires_in": ACCESS_TOKEN_TTL_S,
            "scope": self.scope,
            "domain": self.domain,
            "server_endpoint": self.server_endpoint,
            "status": "L",
            "client_endpoint": client_endpoint,
            "member_id": self.member_id,
            "user_id": self.user_id,
            "refresh_token": refresh,
        }

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless the server is closing."""
        if seconds <= 0 or self._closing.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
