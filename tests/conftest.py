"""Shared fixtures: a Bitrix24 portal simulator on 127.0.0.1 with a small, known state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import Bitrix24Settings
from bot.sandbox.portal import PortalSimulator, SimDialog, SimOperator, SimQueue

WEBHOOK_CODE = "s3cr3tW3bh00kC0de"

ANNA, BOB, IRINA, PAVEL = 15, 16, 27, 28
SUPPORT, SALES = 3, 5


def make_portal(**kwargs: Any) -> PortalSimulator:
    """Operators Anna 15, Bob 16, Irina 27 (not in the directory), Pavel 28 (inactive);
    queues 3 and 5; dialogs 2043 (Bob), 2044 (Anna), 2045 (Irina), 2046 (waiting in queue 3)."""
    options: dict[str, Any] = {
        "webhook_code": WEBHOOK_CODE,
        "leak_per_s": 1000.0,
        "burst": 1000,
        **kwargs,
    }
    return PortalSimulator(
        operators=[
            SimOperator(ANNA, "Anna Smirnova"),
            SimOperator(BOB, "Bob Lee"),
            SimOperator(IRINA, "Irina Volkova"),
            SimOperator(PAVEL, "Pavel Orlov", active=False),
        ],
        queues=[SimQueue(SUPPORT, "Support line"), SimQueue(SALES, "Sales line")],
        dialogs=[
            SimDialog(
                2043,
                3567,
                "Ivan Petrov — WhatsApp",
                owner=BOB,
                line_id=SUPPORT,
                connector="whatsapp",
            ),
            SimDialog(2044, 3568, "Maria — Telegram", owner=ANNA, line_id=SUPPORT),
            SimDialog(
                2045,
                3569,
                "Guest #17 — Live chat",
                owner=IRINA,
                line_id=SUPPORT,
                connector="livechat",
            ),
            SimDialog(2046, 3570, "Oleg — VK", owner=0, line_id=SUPPORT, connector="vkgroup"),
        ],
        **options,
    )


@pytest.fixture
async def portal() -> AsyncIterator[PortalSimulator]:
    """A running portal simulator with a generous leaky bucket."""
    async with make_portal() as sim:
        yield sim


def bitrix_settings(url: str, **overrides: Any) -> Bitrix24Settings:
    """Client settings for a test portal: short timeouts so failures are quick."""
    values: dict[str, Any] = {
        "webhook_url": url,
        "timeout_s": 2.0,
        "deadline_s": 4.0,
        "rate_per_s": 1000.0,
        "burst": 1000,
        **overrides,
    }
    return Bitrix24Settings.model_validate(values)
