"""What /healthz says: ok until Bitrix24 fails as a whole, degraded until a call gets through."""

from __future__ import annotations

import pytest

from bot.health import Health, Report, portal_failing


@pytest.mark.parametrize(
    ("code", "status", "failing"),
    [
        ("ACCESS_ERROR", 400, False),  # one dialog the bot cannot see
        ("OPERATOR_WRONG", 400, False),
        ("ACCESS_DENIED", 400, False),
        ("QUERY_LIMIT_EXCEEDED", 503, False),  # busy for a moment, retried
        ("RESULT_FALSE", None, False),
        ("ACCESS_DENIED", 403, True),  # the plan has no REST API
        ("NO_AUTH_FOUND", 401, True),
        ("expired_token", 401, True),
        ("INTERNAL_SERVER_ERROR", 500, True),
        ("IM_NOT_INSTALLED", 400, True),
        ("NETWORK_ERROR", None, True),
        ("TIMEOUT", None, True),
        ("PORTAL_MOVED", 301, True),
        ("SOMETHING_NEW", 418, True),
    ],
)
def test_what_degrades_the_health(code: str, status: int | None, failing: bool) -> None:
    assert portal_failing(code, status) is failing


def test_since_is_when_the_status_changed() -> None:
    now = [100.0]
    health = Health(clock=lambda: now[0])
    assert health.report() == Report("ok", 100.0)
    now[0] = 110.0
    health.failed("ACCESS_ERROR", 400, "imopenlines.dialog.get")
    assert health.report() == Report("ok", 100.0)
    health.failed("NETWORK_ERROR", None, "batch")
    now[0] = 120.0
    health.failed("TIMEOUT", None, "batch")
    assert health.report() == Report("degraded", 110.0), "since the first failure, not the latest"
    health.succeeded()
    assert health.report() == Report("ok", 120.0)


def test_a_missing_scope_degrades_only_for_the_bots_own_methods() -> None:
    health = Health(clock=lambda: 1.0)
    health.failed("insufficient_scope", 403, "user.get")  # online marks: optional
    assert health.report().status == "ok"
    health.failed("insufficient_scope", 403, "imopenlines.dialog.get")
    assert health.report().status == "degraded"
