"""How a call proves who it is: an inbound webhook's secret URL, or an OAuth access token.

OAuth access tokens live an hour. On ``401 expired_token`` the token is refreshed once —
concurrent calls wait for that one refresh instead of each starting their own — the new pair
is written to the tokens file atomically (Bitrix24 replaces the refresh token every time, so
losing it means authorizing the app again), and the call is repeated. No refresh on a timer:
Bitrix24 may block apps that do.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bot.bitrix24.codes import NETWORK_ERROR
from bot.bitrix24.errors import BitrixError
from bot.config import OAuthSettings, mask_webhook

TOKEN_METHOD = "oauth.token"


class Auth(Protocol):
    """Where a method's call goes, and what it carries to be let in."""

    def endpoint(self, method: str) -> tuple[str, dict[str, Any]]:
        """The URL for ``method`` and fields to add to the call's body."""

    async def renew(self, sent: dict[str, Any]) -> bool:
        """After ``expired_token`` for a call that carried ``sent``: True if a retry can work."""

    def masked(self) -> str:
        """Where calls go, with nothing secret in it."""


class WebhookAuth:
    """An inbound webhook: the secret is in the URL; nothing to renew."""

    def __init__(self, url: str) -> None:
        self._url = url

    def endpoint(self, method: str) -> tuple[str, dict[str, Any]]:
        """``<webhook_url><method>.json``."""
        return f"{self._url}{method}.json", {}

    async def renew(self, sent: dict[str, Any]) -> bool:
        """A webhook does not expire by itself: nothing to do."""
        return False

    def masked(self) -> str:
        """The URL with the code hidden."""
        return mask_webhook(self._url)


class OAuthAuth:
    """An OAuth application: ``auth`` in the body; refreshed once when it expires."""

    def __init__(self, settings: OAuthSettings, http: Callable[[], aiohttp.ClientSession]) -> None:
        self._settings = settings
        self._http = http
        self._lock = asyncio.Lock()
        self._file = Path(settings.tokens_file)
        self.access, self.refresh_token = self._stored() or (
            settings.access_token.get_secret_value() if settings.access_token else "",
            settings.refresh_token.get_secret_value(),
        )
        self.refreshes = 0

    def _stored(self) -> tuple[str, str] | None:
        # the tokens file holds the newest pair; the config's pair is only the first one
        try:
            data = json.loads(self._file.read_text(encoding="utf-8"))
            return str(data["access_token"]), str(data["refresh_token"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def endpoint(self, method: str) -> tuple[str, dict[str, Any]]:
        """``<portal>/rest/<method>.json`` with ``auth`` in the body."""
        return f"{self._settings.portal}/rest/{method}.json", {"auth": self.access}

    def masked(self) -> str:
        """The portal's REST address (tokens are never shown)."""
        return f"{self._settings.portal}/rest/ (OAuth app {self._settings.client_id})"

    async def renew(self, sent: dict[str, Any]) -> bool:
        """Refresh the tokens, once for all the calls that found them expired."""
        async with self._lock:
            if sent.get("auth") != self.access:
                return True  # another call refreshed while this one waited
            await self._refresh()
            return True

    async def _refresh(self) -> None:
        settings = self._settings
        query = {
            "grant_type": "refresh_token",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value(),
            "refresh_token": self.refresh_token,
        }
        try:
            async with self._http().get(f"{settings.server}/oauth/token/", params=query) as answer:
                status = answer.status
                data = await answer.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise BitrixError(
                NETWORK_ERROR, f"token refresh failed: {type(exc).__name__}", None, TOKEN_METHOD
            ) from None
        if not isinstance(data, dict) or "error" in data or "access_token" not in data:
            code = (
                str(data.get("error", "BAD_RESPONSE")) if isinstance(data, dict) else "BAD_RESPONSE"
            )
            description = str(data.get("error_description", "")) if isinstance(data, dict) else ""
            raise BitrixError(code, description, status, TOKEN_METHOD)
        self.access, self.refresh_token = str(data["access_token"]), str(data["refresh_token"])
        self.refreshes += 1
        await asyncio.to_thread(self._save, data)

    def _save(self, data: dict[str, Any]) -> None:
        """Write the new pair atomically: a crash leaves the old file or the new, never half."""
        keep = {k: data[k] for k in ("access_token", "refresh_token", "expires") if k in data}
        self._file.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self._file.parent, prefix=".tokens-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(keep, out)
            os.chmod(temp, 0o600)
            os.replace(temp, self._file)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
