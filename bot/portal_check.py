"""Ask the portal whether the bot can work with it: ``python -m bot check --online``, and the
same check once at start-up, in the background.

One ``batch`` request (``profile`` and ``scope``) shows everything at once: the portal answers
at that address, the webhook code is valid, which user the webhook acts as, and which scopes
it has. Each finding is one line, with nothing secret in it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from bot.bitrix24.client import BitrixClient
from bot.bitrix24.codes import (
    BAD_RESPONSE,
    DNS_ERROR,
    NETWORK_ERROR,
    PORTAL_MOVED,
    TIMEOUT,
    TLS_ERROR,
)
from bot.bitrix24.errors import BitrixError
from bot.config import ENV_WEBHOOK, Config, mask_webhook
from bot.directory_sync import generated_path
from bot.yamlsource import parse_yaml

__all__ = [
    "Finding",
    "Level",
    "check_failed",
    "check_in_background",
    "check_portal",
    "directory_sync_in_use",
    "stop_check",
    "stops_the_bot",
]

log = logging.getLogger(__name__)

Level = Literal["ok", "warning", "problem", "note"]

TRANSFER_SCOPE: Final = "imopenlines"
SYNC_SCOPE: Final = "user"

# Bitrix24's OAuth server refuses a token refresh with these (the app's tokens are unusable)
_OAUTH_ADVICE: Final[Mapping[str, str]] = {
    "invalid_grant": "the refresh token is expired or revoked: authorize the app again",
    "invalid_client": "bitrix24.oauth.client_id or client_secret is wrong",
    "expired_token": "the access token expired and could not be renewed",
    "PAYMENT_REQUIRED": "the application is not paid for",
}


@dataclass(frozen=True)
class Finding:
    """One line of the check's report."""

    level: Level
    text: str

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


def stops_the_bot(findings: Iterable[Finding]) -> bool:
    """Whether any finding means the bot cannot work with the portal."""
    return any(finding.level == "problem" for finding in findings)


def directory_sync_in_use(config_file: Path | None) -> bool:
    """Whether the config's folder holds the generated directory, or the config includes it."""
    if config_file is None:
        return False
    generated = generated_path(config_file)
    if generated.exists():
        return True
    try:
        data = parse_yaml(config_file.read_text(encoding="utf-8")).data
    except (OSError, UnicodeDecodeError):
        return False
    spec = data.get("include") if isinstance(data, dict) else None
    names = spec if isinstance(spec, list) else [spec]
    target = generated.resolve()
    return any(
        isinstance(name, str) and name and (config_file.parent / name).resolve() == target
        for name in names
    )


async def check_portal(config: Config, config_file: Path | None) -> list[Finding]:
    """Ask the portal whether the bot can work with it; one :class:`Finding` per line."""
    settings = config.bitrix24
    if settings.webhook_url is None and settings.oauth is None:
        return [Finding("problem", f"bitrix24.webhook_url is not set: export {ENV_WEBHOOK}=...")]
    where = _address(config)
    try:
        async with BitrixClient(settings) as client:
            answers = await client.batch({"profile": ("profile", {}), "scope": ("scope", {})})
    except BitrixError as err:
        return [_request_failed(err, config, where)]
    webhook = settings.webhook_url is not None
    findings = [
        Finding("ok", f"the portal answers at {where}"),
        Finding("ok", "the webhook code is valid" if webhook else "the OAuth token is valid"),
    ]
    findings += _user_findings(answers["profile"], config)
    in_use = await asyncio.to_thread(directory_sync_in_use, config_file)
    findings += _scope_findings(answers["scope"], sync_in_use=in_use)
    return findings


def check_in_background(config: Config, config_file: Path | None) -> asyncio.Task[None]:
    """Start :func:`check_portal` in a task that logs each finding as one line; never fails."""
    return asyncio.create_task(_log_check(config, config_file), name="portal-check")


async def stop_check(task: asyncio.Task[None] | None) -> None:
    """Cancel the background check if it still runs, and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def check_failed(exc: BaseException) -> Finding:
    """The one line for a check that broke down unexpectedly (no traceback, nothing secret)."""
    text = " ".join(str(exc).split())
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return Finding("problem", f"the portal check failed: {mask_webhook(what)[:300]}")


async def _log_check(config: Config, config_file: Path | None) -> None:
    try:
        findings = await check_portal(config, config_file)
    except Exception as exc:  # the bot runs whatever happens to this check
        findings = [check_failed(exc)]
    for finding in findings:
        quiet = finding.level in ("ok", "note")
        log.log(logging.INFO if quiet else logging.WARNING, "%s", finding)


def _address(config: Config) -> str:
    """Where the check goes, with nothing secret in it."""
    settings = config.bitrix24
    if settings.webhook_url is not None:
        return settings.masked_webhook()
    assert settings.oauth is not None
    return f"{settings.oauth.portal}/rest/"


def _setting(config: Config) -> str:
    """The setting (and variable) that names the portal's address."""
    if config.bitrix24.webhook_url is not None:
        return f"bitrix24.webhook_url / {ENV_WEBHOOK}"
    return "bitrix24.oauth.portal"


def _new_address(location: str) -> str:
    """The moved portal's new base address: the redirect's target without our method name."""
    parts = urlsplit(location)
    path = re.sub(r"[^/]*\.json$", "", parts.path)
    return parts._replace(path=path, query="", fragment="").geturl()


def _request_failed(err: BitrixError, config: Config, where: str) -> Finding:
    """The one line for a check whose request got no usable answer."""
    host = urlsplit(where).netloc
    code, status = err.code, f"HTTP {err.status} " if err.status is not None else ""
    if code == PORTAL_MOVED:
        if err.location is None:
            text = f"the portal at {where} answers {status}with a redirect to no address"
        else:
            text = (
                f"the portal moved: {where} answers {status}with a redirect to "
                f"{_new_address(err.location)}; update {_setting(config)}"
            )
        return Finding("problem", text)
    if code == DNS_ERROR:
        return Finding("problem", f"{host} does not resolve (DNS): check {_setting(config)}")
    if code == TLS_ERROR:
        return Finding("problem", f"TLS with {host} failed: a bad or untrusted certificate")
    if code == NETWORK_ERROR:
        reason = err.description.removeprefix("cannot connect: ") or code
        return Finding("problem", f"cannot connect to {host}: {reason}")
    if code == TIMEOUT:
        return Finding("problem", f"{host} did not answer in time ({err.description})")
    if code == BAD_RESPONSE:
        return Finding(
            "problem",
            f"{where} answers {status}but not as Bitrix24 does (no Bitrix24 JSON): "
            f"is {_setting(config)} the portal's address?",
        )
    if code == "NO_AUTH_FOUND":
        if config.bitrix24.webhook_url is not None:
            return Finding(
                "problem",
                f"{status}NO_AUTH_FOUND: the webhook code is wrong or the webhook was deleted; "
                f"copy the inbound webhook's URL again into {ENV_WEBHOOK}",
            )
        return Finding("problem", f"{status}NO_AUTH_FOUND: the portal does not accept the token")
    if code in _OAUTH_ADVICE:
        return Finding("problem", f"OAuth: {code}: {_OAUTH_ADVICE[code]}")
    detail = f": {err.description}" if err.description else ""
    return Finding("problem", f"the portal refused the check: {status}{code}{detail}")


def _user_findings(profile: Any, config: Config) -> list[Finding]:
    """Who the webhook acts as, and a warning when that user is an operator too."""
    if isinstance(profile, BitrixError) or not isinstance(profile, dict):
        why = profile.code if isinstance(profile, BitrixError) else "no profile in the answer"
        return [Finding("warning", f"could not tell which user the webhook acts as ({why})")]
    user_id = _as_int(profile.get("ID"))
    name = " ".join(str(profile.get(key) or "").strip() for key in ("NAME", "LAST_NAME"))
    admin = profile.get("ADMIN")
    role = "" if not isinstance(admin, bool) else " (admin)" if admin else " (not an admin)"
    who = f"user {user_id if user_id is not None else '?'}, {name.strip() or '(no name)'}"
    findings = [Finding("ok", f"the webhook acts as {who}{role}")]
    for operator in config.operators:
        if user_id is not None and operator.bitrix_id == user_id:
            findings.append(
                Finding(
                    "warning",
                    f"operator {operator.key} ({operator.name}, bitrix_id {user_id}) is the "
                    "webhook's own user: the portal refuses transfers to them; "
                    "make the webhook as another user",
                )
            )
    return findings


def _scope_findings(scope: Any, *, sync_in_use: bool) -> list[Finding]:
    """Whether the scopes the bot (and directory sync) need are granted."""
    if isinstance(scope, BitrixError) or not isinstance(scope, list):
        why = scope.code if isinstance(scope, BitrixError) else "no list in the answer"
        return [Finding("warning", f"could not read the webhook's scopes ({why})")]
    granted = {str(name) for name in scope}
    findings: list[Finding] = []
    if TRANSFER_SCOPE in granted:
        findings.append(Finding("ok", f"scope {TRANSFER_SCOPE} is granted (transfers)"))
    else:
        findings.append(
            Finding(
                "problem",
                f"scope {TRANSFER_SCOPE} is not granted: the bot cannot see or move dialogs; "
                f"add it to the webhook in Bitrix24 (granted: {_listed(granted)})",
            )
        )
    if SYNC_SCOPE in granted:
        findings.append(
            Finding("ok", f"scope {SYNC_SCOPE} is granted (online marks, directory sync)")
        )
    elif sync_in_use:
        findings.append(
            Finding(
                "warning",
                f"scope {SYNC_SCOPE} is not granted, and directory sync is in use: "
                f"`python -m bot directory sync` will fail until the webhook has it "
                f"(and operators show no online marks)",
            )
        )
    else:
        findings.append(
            Finding(
                "note",
                f"scope {SYNC_SCOPE} is not granted: operators show no online marks, and "
                f"`python -m bot directory sync` would need it",
            )
        )
    return findings


def _listed(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
