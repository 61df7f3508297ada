"""Every error code the bot knows: Bitrix24's own (per method and system-wide) and ours.

Bitrix24's descriptions are not meant for end users and change between versions, so we match
on the code (case-sensitive: ``expired_token`` is lower case) and on the HTTP status where one
code means two things (``ACCESS_DENIED``).
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"
FINISH = "imopenlines.operator.another.finish"
ANY_METHOD = "*"
OURS = "client"
OAUTH = "oauth.token"


@dataclass(frozen=True)
class KnownCode:
    """One error the bot can meet: its code, usual HTTP status and the method that returns it."""

    code: str
    status: int | None
    method: str
    description: str

    @property
    def key(self) -> str:
        """Message key: the code, plus the status where the code alone is ambiguous."""
        if self.code == "ACCESS_DENIED":
            return f"{self.code}_{self.status}"
        return self.code


# Our own codes, for what is not a Bitrix24 answer at all.
NETWORK_ERROR = "NETWORK_ERROR"
DNS_ERROR = "DNS_ERROR"
TLS_ERROR = "TLS_ERROR"
TIMEOUT = "TIMEOUT"
BAD_RESPONSE = "BAD_RESPONSE"
RESULT_FALSE = "RESULT_FALSE"
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
NOT_CONFIGURED = "NOT_CONFIGURED"
PORTAL_MOVED = "PORTAL_MOVED"

KNOWN_CODES: tuple[KnownCode, ...] = (
    # imopenlines.operator.transfer
    KnownCode("CHAT_ID_EMPTY", 400, TRANSFER, "Chat ID can't be empty"),
    KnownCode("USER_ID_EMPTY", 400, TRANSFER, "User ID can't be empty"),
    KnownCode("QUEUE_ID_EMPTY", 400, TRANSFER, "QUEUE ID can't be empty"),
    KnownCode("TRANSFER_ID_EMPTY", 400, TRANSFER, "Queue ID or User ID can't be empty"),
    KnownCode("OPERATOR_WRONG", 400, TRANSFER, "You cannot redirect to this operator"),
    # imopenlines.dialog.get
    KnownCode("ACCESS_ERROR", 400, DIALOG_GET, "You do not have access to the specified dialog"),
    KnownCode("IM_NOT_INSTALLED", 400, DIALOG_GET, "Messenger is not installed."),
    # imopenlines.operator.another.finish
    KnownCode("CHAT_ID", 400, FINISH, "The provided chat identifier is invalid"),
    KnownCode("CHAT_TYPE", 400, FINISH, "The specified chat is not an open line"),
    KnownCode(
        "ACCESS_DENIED",
        400,
        FINISH,
        "You cannot open this conversation as you do not have sufficient permissions",
    ),
    KnownCode("USER_ID", 400, FINISH, "The provided user identifier is invalid"),
    # system codes, any method
    KnownCode("QUERY_LIMIT_EXCEEDED", 503, ANY_METHOD, "Too many requests"),
    KnownCode(
        "OPERATION_TIME_LIMIT", 429, ANY_METHOD, "Method is blocked due to operation time limit"
    ),
    KnownCode("OVERLOAD_LIMIT", 503, ANY_METHOD, "REST API is blocked due to overload"),
    KnownCode("INTERNAL_SERVER_ERROR", 500, ANY_METHOD, "Internal server error"),
    KnownCode("ERROR_UNEXPECTED_ANSWER", 500, ANY_METHOD, "Server returned an unexpected response"),
    KnownCode("PORTAL_DELETED", 500, ANY_METHOD, "Portal was deleted"),
    KnownCode("NO_AUTH_FOUND", 401, ANY_METHOD, "Wrong authorization data"),
    KnownCode("expired_token", 401, ANY_METHOD, "The access token provided has expired"),
    KnownCode("INVALID_CREDENTIALS", 403, ANY_METHOD, "Invalid request credentials"),
    KnownCode(
        "insufficient_scope",
        403,
        ANY_METHOD,
        "The request requires higher privileges than provided by the webhook token",
    ),
    KnownCode(
        "user_access_error", 403, ANY_METHOD, "The user does not have access to the application"
    ),
    KnownCode("ACCESS_DENIED", 403, ANY_METHOD, "REST API is available only on commercial plans"),
    KnownCode("INVALID_REQUEST", 400, ANY_METHOD, "Https required"),
    KnownCode("ERROR_BATCH_LENGTH_EXCEEDED", 400, ANY_METHOD, "Max batch length exceeded"),
    KnownCode(
        "ERROR_BATCH_METHOD_NOT_ALLOWED", 405, ANY_METHOD, "Method is not allowed for batch usage"
    ),
    KnownCode("ERROR_METHOD_NOT_FOUND", 404, ANY_METHOD, "Method not found"),
    KnownCode("ERROR_MANIFEST_IS_NOT_AVAILABLE", 404, ANY_METHOD, "Manifest is not available"),
    # Bitrix24's OAuth server, when the bot refreshes its access token
    KnownCode("invalid_request", 400, OAUTH, "Request is missing or has malformed parameters"),
    KnownCode("invalid_client", 401, OAUTH, "Client id or secret is wrong"),
    KnownCode("invalid_grant", 400, OAUTH, "The refresh token is expired or revoked"),
    KnownCode("invalid_scope", 400, OAUTH, "The requested scope is invalid"),
    KnownCode("PAYMENT_REQUIRED", 402, OAUTH, "The application is not paid for"),
    # ours
    KnownCode(NETWORK_ERROR, None, OURS, "Connection refused, reset or dropped"),
    KnownCode(DNS_ERROR, None, OURS, "The portal's host name does not resolve"),
    KnownCode(TLS_ERROR, None, OURS, "TLS handshake or certificate failed"),
    KnownCode(TIMEOUT, None, OURS, "No answer in time"),
    KnownCode(BAD_RESPONSE, None, OURS, "The answer was not Bitrix24 JSON (proxy page, empty)"),
    KnownCode(RESULT_FALSE, 200, OURS, 'The portal answered {"result": false}'),
    KnownCode(OUTCOME_UNKNOWN, None, OURS, "Sent, but whether it took effect is unknown"),
    KnownCode(NOT_CONFIGURED, None, OURS, "No webhook URL configured"),
    KnownCode(PORTAL_MOVED, None, OURS, "The portal answers with a redirect to a new address"),
)

# Codes whose request surely did not run, so repeating it is safe.
NOT_EXECUTED = frozenset({"QUERY_LIMIT_EXCEEDED"})


def known_code(code: str, status: int | None) -> KnownCode | None:
    """The table entry for ``code``; ``status`` picks between same-named codes."""
    matches = [k for k in KNOWN_CODES if k.code == code]
    if not matches:
        return None
    for entry in matches:
        if entry.status == status:
            return entry
    # ACCESS_DENIED with an unusual status: 4xx other than 403 means the dialog, like 400
    if code == "ACCESS_DENIED" and status is not None and status != 403:
        return next(k for k in matches if k.status == 400)
    return matches[-1]
