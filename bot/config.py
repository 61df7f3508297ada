"""The bot's configuration: ``config.yaml`` loaded once into frozen, typed objects.

Every problem in a file is collected and reported at once, one line each, naming the key path
and the line (``operators[2].bitrix_id (line 31): must be a positive integer``).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo

from bot.messages import LANGS, MessageOverrides, check_overrides
from bot.spelling import fold
from bot.yamlsource import Path as KeyPath
from bot.yamlsource import Problem, YamlDocument, format_path, parse_yaml

ENV_TOKEN = "TELEGRAM_BOT_TOKEN"
ENV_API_URL = "TELEGRAM_API_URL"
ENV_WEBHOOK = "BITRIX24_WEBHOOK_URL"
ENV_CONFIG = "BOT_CONFIG"
ENV_WEBHOOK_SECRET = "TELEGRAM_WEBHOOK_SECRET"
ENV_STORAGE_URL = "STORAGE_URL"

# A config file, or a file it includes, may be at most this large. A directory of 100,000
# operators as `directory sync` writes it takes about 10 MB (50 MB with every key and name at
# its longest); anything larger is not a config, and reading stops here even for a file that
# never ends (/dev/zero).
MAX_FILE_MB: Final = 64
MAX_FILE_BYTES: Final = MAX_FILE_MB * 1024 * 1024
# A file with a million broken entries is one mistake (a wrong file, a broken generator):
# the first problems say what it is, and listing them all would take minutes and gigabytes.
MAX_PROBLEMS: Final = 50
MORE_PROBLEMS: Final = f"more problems not listed: fix these {MAX_PROBLEMS} and check again"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# a key or alias: letters of any script ("anna", "анна"), digits, _ . -; a letter first
Key = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[^\W\d_][\w.-]{0,63}$"),
]
Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^@?[A-Za-z][A-Za-z0-9_]{3,31}$"),
]

_WEBHOOK_PATH = re.compile(r"^/rest/(?P<user>\d+)/(?P<code>[^/]+)/$")
_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses, where plain http cannot leak anything."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _text_or_none(value: Any) -> Any:
    """A value given as text or as SecretStr, in plain; None when empty."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return None if value is None or value == "" else value


def _portal_url(value: Any, what: str) -> Any:
    """An https:// base URL (plain http only for loopback hosts), without a trailing slash."""
    if not isinstance(value, str):
        raise ValueError(f"must be the {what}'s address, such as https://yourcompany.bitrix24.ru")
    parts = urlsplit(value.strip())
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ValueError("must start with https:// (plain http only for 127.0.0.1/localhost)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be the {what}'s address, such as https://yourcompany.bitrix24.ru")
    return value.strip().rstrip("/")


class OAuthSettings(_Frozen):
    """A Bitrix24 OAuth application, for portals that do not allow inbound webhooks."""

    portal: str  # https://yourcompany.bitrix24.ru
    client_id: Name
    client_secret: SecretStr
    refresh_token: SecretStr
    access_token: SecretStr | None = None
    tokens_file: str = "bitrix24-tokens.json"  # the newest tokens; next to the config file
    server: str = "https://oauth.bitrix.info"

    @field_validator("portal", "server", mode="before")
    @classmethod
    def _check_urls(cls, value: Any) -> Any:
        return _portal_url(value, "portal")


class Bitrix24Settings(_Frozen):
    """How to reach the portal and how politely to call it."""

    webhook_url: SecretStr | None = None
    oauth: OAuthSettings | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    deadline_s: float = Field(default=15.0, gt=0, le=120)
    rate_per_s: float = Field(default=2.0, gt=0, le=10_000)
    burst: int = Field(default=50, ge=1, le=10_000)
    legacy_transfer_id: bool = False
    batch_calls: bool = True

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _check_webhook(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a URL such as https://<portal>/rest/<user_id>/<code>/")
        url = value.strip()
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        if parts.scheme == "http":
            if not is_loopback(parts.hostname or ""):
                raise ValueError(
                    "must start with https:// (plain http is allowed only for 127.0.0.1/localhost)"
                )
        elif parts.scheme != "https":
            raise ValueError("must start with https://")
        if not parts.hostname:
            raise ValueError("has no portal host name")
        if not _WEBHOOK_PATH.match(parts.path):
            raise ValueError(
                "must look like https://<portal>/rest/<user_id>/<code>/ "
                "(copy it from Bitrix24: Developer resources > Inbound webhook)"
            )
        return url

    def masked_webhook(self) -> str:
        """The webhook URL with its secret code hidden: ``https://portal/rest/1/***/``."""
        if self.webhook_url is None:
            return "(not set)"
        return mask_webhook(self.webhook_url.get_secret_value())


def mask_webhook(url: str) -> str:
    """Hide the code part of a ``/rest/<user>/<code>/`` URL."""
    return re.sub(r"(/rest/\d+/)[^/]+", r"\1***", url)


def parse_listen(listen: str, flag: str = "--listen") -> tuple[str, int]:
    """``0.0.0.0:8080`` -> (host, port); raises ValueError for anything else."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{flag} {listen!r}: expected HOST:PORT, such as 127.0.0.1:8080")
    return host.strip("[]"), int(port)


class MetricsSettings(_Frozen):
    """Polling mode's metrics listener (webhook mode serves /metrics on its own listener)."""

    listen: str | None = None  # HOST:PORT; none: no listener

    @field_validator("listen", mode="before")
    @classmethod
    def _check_listen(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is not None:
            try:
                parse_listen(str(value))
            except ValueError:
                raise ValueError("must be HOST:PORT, such as 127.0.0.1:9108") from None
        return value


class WebhookSettings(_Frozen):
    """Webhook mode: where Telegram sends updates, where the bot listens, the shared secret."""

    url: str | None = None
    listen: str = "0.0.0.0:8080"
    secret: SecretStr | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is None:
            return None
        if not isinstance(value, str) or urlsplit(value).scheme != "https":
            raise ValueError("must be the https:// address Telegram will post updates to")
        return value

    @field_validator("secret", mode="before")
    @classmethod
    def _check_secret(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(value)):
            raise ValueError(
                "may hold only letters, digits, _ and - (at most 256), as Telegram asks"
            )
        return value


class TelegramSettings(_Frozen):
    """The bot's Telegram identity and, optionally, another Bot API server."""

    token: SecretStr | None = None
    api_url: str | None = None
    webhook: WebhookSettings = WebhookSettings()

    @field_validator("token", mode="before")
    @classmethod
    def _check_token(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is None:
            return None
        if not isinstance(value, str) or not _TOKEN_SHAPE.match(value.strip()):
            # never echo the value: it may be a real token with a typo
            raise ValueError("does not look like a bot token (BotFather gives 123456789:AA...)")
        return value.strip()

    @field_validator("api_url", mode="before")
    @classmethod
    def _check_api_url(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is None:
            return None
        if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL of a Bot API server, or empty")
        return value.rstrip("/")


class Person(_Frozen):
    """A supervisor: Telegram numeric user ID and a display name."""

    id: PositiveInt
    name: Name


class Chat(_Frozen):
    """A group chat where commands are accepted."""

    id: int
    name: Name


class Operator(_Frozen):
    """An operator as the directory knows them."""

    key: Key
    bitrix_id: PositiveInt
    name: Name
    aliases: tuple[Key, ...] = ()
    telegram: Username | None = None

    @field_validator("telegram")
    @classmethod
    def _strip_at(cls, value: str | None) -> str | None:
        return value.lstrip("@") if value else value


class Queue(_Frozen):
    """An open line (queue) as the directory knows it."""

    key: Key
    bitrix_id: PositiveInt
    name: Name
    aliases: tuple[Key, ...] = ()


class StorageSettings(_Frozen):
    """Where the audit trail and the marks of handled updates are kept."""

    path: str = "handoff.sqlite3"  # relative to the config file's folder
    url: SecretStr | None = None  # postgresql://user:password@host/db: several instances

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        value = _text_or_none(value)
        if value is not None and not str(value).startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (or leave it out for SQLite)")
        return value


def _time_zone(value: Any) -> Any:
    """An IANA time zone name as the tz database spells it (``europe/moscow`` is taken as
    ``Europe/Moscow``); an unknown one is refused, with the closest names."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a time zone name such as Europe/Moscow or UTC")
    name = value.strip()
    try:
        ZoneInfo(name)
        return name
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    known = available_timezones()
    spelled = {zone.lower(): zone for zone in known}
    if name.lower() in spelled:
        return spelled[name.lower()]
    # an abbreviation (MSK) is no name, and its closest spellings (MST) would mislead
    close = difflib.get_close_matches(name, sorted(known), n=2) if "/" in name else []
    hint = f"did you mean {' or '.join(close)}?" if close else "use one like Europe/Moscow or UTC"
    raise ValueError(f"'{name[:60]}' is not a time zone name; {hint}")


class Config(_Frozen):
    """The whole configuration, validated."""

    bitrix24: Bitrix24Settings = Bitrix24Settings()
    telegram: TelegramSettings = TelegramSettings()
    language: Literal["auto", "en", "ru"] = "auto"
    timezone: str = "UTC"  # the team's: /history shows times in it
    admin_contact: Name | None = None
    supervisors: tuple[Person, ...] = ()
    admins: tuple[Person, ...] = ()  # who may /reload; empty: every supervisor
    chats: tuple[Chat, ...] = ()
    announce_to: int | None = None
    dialog_numbers: Literal["chat", "session"] = "chat"
    button_expiry_min: float = Field(default=15.0, gt=0, le=48 * 60)
    stale_after_min: float = Field(default=10.0, gt=0, le=7 * 24 * 60)
    shutdown_grace_s: float = Field(default=30.0, gt=0, le=600)
    storage: StorageSettings = StorageSettings()
    metrics: MetricsSettings = MetricsSettings()
    operators: tuple[Operator, ...] = ()
    queues: tuple[Queue, ...] = ()
    messages: MessageOverrides = Field(default_factory=dict)

    @field_validator("timezone", mode="before")
    @classmethod
    def _check_timezone(cls, value: Any) -> Any:
        return _time_zone(value)

    @property
    def zone(self) -> ZoneInfo:
        """The team's time zone."""
        return ZoneInfo(self.timezone)

    def missing_secrets(self) -> list[str]:
        """What must still be set before the bot can run, one line each, naming the env var."""
        missing = []
        if self.telegram.token is None:
            missing.append(f"telegram.token is not set: export {ENV_TOKEN}=<token from @BotFather>")
        if self.bitrix24.webhook_url is None and self.bitrix24.oauth is None:
            missing.append(
                f"bitrix24.webhook_url is not set: export {ENV_WEBHOOK}="
                "https://<portal>/rest/<user_id>/<code>/"
            )
        return missing


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` holds one line per problem.

    At most :data:`MAX_PROBLEMS` are listed; ``more`` says that others were left out (then
    the last line of ``problems`` says so too, for whoever shows them one by one).
    """

    def __init__(self, source: str, problems: list[Problem], *, more: bool = False) -> None:
        self.source = source
        more = more or len(problems) > MAX_PROBLEMS
        self.problems = problems[:MAX_PROBLEMS]
        count = len(self.problems)
        header = f"{source}: {count} problem{'s' if count != 1 else ''}"
        if more:
            header += ", and more not listed"
            self.problems.append(Problem((), MORE_PROBLEMS))
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{header}\n{lines}")


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` stands for a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        value = env.get(match.group(1), "")
        if value == "" and match.group(2) is not None:
            return match.group(2)
        return value

    return _VAR.sub(replace, text)


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set_path(data: Any, path: KeyPath, value: Any) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[KeyPath, str]:
    """Let the environment win over the file; returns which paths it set, and from where."""
    applied: dict[KeyPath, str] = {}
    for var, path in (
        (ENV_TOKEN, ("telegram", "token")),
        (ENV_API_URL, ("telegram", "api_url")),
        (ENV_WEBHOOK, ("bitrix24", "webhook_url")),
        (ENV_WEBHOOK_SECRET, ("telegram", "webhook", "secret")),
        (ENV_STORAGE_URL, ("storage", "url")),
    ):
        value = env.get(var, "")
        if value:
            section = data
            for name in path[:-1]:
                if not isinstance(section.get(name), dict):
                    section[name] = {}
                section = section[name]
            section[path[-1]] = value
            applied[path] = var
    return applied


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside a field's type (``tuple[Operator, ...]``: Operator)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _field_at(loc: KeyPath) -> FieldInfo | None:
    """The declared field at ``loc``: ``operators[0].bitrix_id`` is Operator.bitrix_id."""
    model: type[BaseModel] | None = Config
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = _model_in(info.annotation)
    return info


def _is_positive_int(loc: KeyPath) -> bool:
    """Whether the field at ``loc`` is declared as a positive integer."""
    field = _field_at(loc)
    return (
        field is not None
        and field.annotation is int
        and any(getattr(m, "gt", None) == 0 for m in field.metadata)
    )


def _number(bound: Any) -> Any:
    """A bound as written in the README: 600, not 600.0."""
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def _friendly(error: Mapping[str, Any], loc: KeyPath) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key (a typo?)"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a positive integer" if _is_positive_int(loc) else "must be a whole number"
    if kind == "greater_than":
        # a count or an ID reads "positive integer"; a duration such as 0.5 s is not one
        if _is_positive_int(loc):
            return "must be a positive integer"
        return f"must be more than {_number(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"must be at least {_number(ctx.get('ge'))}"
    if kind == "less_than_equal":
        return f"must be at most {_number(ctx.get('le'))}"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("string_type", "string_too_short"):
        return "must be non-empty text"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind == "string_pattern_mismatch":
        return "must start with a letter and use only letters, digits, _ . - (no spaces)"
    if kind == "literal_error":
        return f"must be one of: {ctx.get('expected', '')}".replace("'", "")
    if kind in ("list_type", "tuple_type"):
        return "must be a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a section of key: value pairs"
    if kind == "bool_type" or kind == "bool_parsing":
        return "must be true or false"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


_MODELS: dict[str, type[BaseModel]] = {
    "bitrix24": Bitrix24Settings,
    "telegram": TelegramSettings,
    "supervisors": Person,
    "chats": Chat,
    "operators": Operator,
    "queues": Queue,
    "storage": StorageSettings,
    "oauth": OAuthSettings,
}


def _suggest_key(loc: KeyPath) -> str:
    fields: list[str]
    if len(loc) == 1:
        fields = list(Config.model_fields)
    else:
        model = _MODELS.get(str(loc[0]))
        fields = list(model.model_fields) if model else []
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _validation_problems(
    exc: ValidationError,
    doc: YamlDocument,
    from_env: Mapping[KeyPath, str],
    within: KeyPath = (),
    offset: int = 0,
) -> list[Problem]:
    """The problems of a validation of the data at ``within`` (entries ``offset`` on)."""
    problems = []
    # one past the cap, so the report can say there are more
    for error in exc.errors(include_url=False, include_input=False)[: MAX_PROBLEMS + 1]:
        loc: KeyPath = tuple(p for p in error["loc"] if isinstance(p, str | int))
        if within and loc and isinstance(loc[0], int):
            # an entry of a list section, validated in a chunk: its index in the whole list
            loc = (*within, loc[0] + offset, *loc[1:])
        message = _friendly(error, loc)
        if error["type"] == "extra_forbidden":
            message += _suggest_key(loc)
        if loc in from_env:
            # the value came from the environment, not from any line of the file
            problems.append(Problem(loc, f"{message} (from ${from_env[loc]})"))
        else:
            problems.append(Problem(loc, message, doc.line_of(loc)))
    return problems


def _raw_entries(data: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    items = data.get(section)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def _cross_checks(data: dict[str, Any], doc: YamlDocument) -> list[Problem]:
    """Uniqueness across entries, on the raw data: a clash is reported even when another
    field of the same entry is invalid too."""
    problems: list[Problem] = []
    # every name folded (bot.spelling): "анна" and "Anna" are one name to the directory
    names: dict[str, tuple[KeyPath, str]] = {}

    def claim(name: Any, path: KeyPath) -> None:
        if not isinstance(name, str) or not name.strip():
            return
        name = name.strip().lstrip("@") if path[-1] == "telegram" else name.strip()
        owner, spelled = names.setdefault(fold(name), (path, name))
        if owner is not path and owner[:2] != path[:2]:
            alike = f" ('{spelled}')" if spelled.lower() != name.lower() else ""
            problems.append(
                Problem(
                    path,
                    f"'{name}' is already used by {format_path(owner)}{alike}: "
                    "every key, alias and username must be unique",
                    doc.line_of(path),
                )
            )

    for kind in ("operators", "queues"):
        ids: dict[int, int] = {}
        for i, entry in _raw_entries(data, kind):
            claim(entry.get("key"), (kind, i, "key"))
            aliases = entry.get("aliases")
            for j, alias in enumerate(aliases if isinstance(aliases, list) else []):
                claim(alias, (kind, i, "aliases", j))
            if kind == "operators":
                claim(entry.get("telegram"), (kind, i, "telegram"))
            bitrix_id = entry.get("bitrix_id")
            if not isinstance(bitrix_id, int) or isinstance(bitrix_id, bool) or bitrix_id <= 0:
                continue
            if bitrix_id in ids:
                path: KeyPath = (kind, i, "bitrix_id")
                problems.append(
                    Problem(
                        path,
                        f"bitrix_id {bitrix_id} is already used by {kind}[{ids[bitrix_id]}]",
                        doc.line_of(path),
                    )
                )
            ids.setdefault(bitrix_id, i)

    for kind in ("supervisors", "chats"):
        seen: set[Any] = set()
        for i, person in _raw_entries(data, kind):
            person_id = person.get("id")
            if not isinstance(person_id, int):
                continue
            if person_id in seen:
                path = (kind, i, "id")
                problems.append(Problem(path, f"id {person_id} is listed twice", doc.line_of(path)))
            seen.add(person_id)

    overrides = data.get("messages")
    if isinstance(overrides, dict):
        texts = {
            lang: section
            for lang, section in overrides.items()
            if lang in LANGS and isinstance(section, dict)
        }
        for where, message in check_overrides(texts):
            key_path = ("messages", *where)
            problems.append(Problem(key_path, message, doc.line_of(key_path)))
    return problems


class FileTooLarge(Exception):
    """A config file (or an include) larger than :data:`MAX_FILE_BYTES`."""


TOO_LARGE = (
    f"larger than {MAX_FILE_MB} MB, far more than any config needs "
    "(100,000 operators take about 10 MB)"
)


def read_config_text(path: Path) -> str:
    """A config file's UTF-8 text; raises :class:`FileTooLarge` past :data:`MAX_FILE_BYTES`.

    Reads at most one byte past the cap, so a file that never ends costs no more than that.
    """
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise FileTooLarge(str(path))
    # universal newlines, as Path.read_text() gave: values keep the same line ends as before
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _merge_includes(data: dict[str, Any], base_dir: Path | None, line: int | None) -> list[Problem]:
    """Add the operators and queues of ``include:`` files (a generated directory, say).

    The config's own entries win: an included entry whose Bitrix24 ID the config lists is
    left out, and one whose key the config already uses is keyed by its ID instead
    (``user15``, ``line3``), so hand-written names and aliases always mean what they say.
    """
    spec = data.pop("include")
    names = spec if isinstance(spec, list) else [spec]
    if base_dir is None or not all(isinstance(n, str) and n for n in names):
        return [Problem(("include",), "must name files next to config.yaml", line)]
    problems: list[Problem] = []
    taken: set[str] = set()
    for kind in ("operators", "queues"):
        for _, entry in _raw_entries(data, kind):
            aliases = entry.get("aliases")
            spelled = [entry.get("key"), entry.get("telegram")]
            spelled += aliases if isinstance(aliases, list) else []
            taken.update(fold(name) for name in spelled if isinstance(name, str))
    for name in names:
        path = base_dir / name
        try:
            # no line map: problems inside the file are reported as one line about it
            included = parse_yaml(read_config_text(path), track_lines=False)
        except FileTooLarge:
            problems.append(Problem(("include",), f"{name}: cannot be read: {TOO_LARGE}", line))
            continue
        except UnicodeDecodeError:
            problems.append(Problem(("include",), f"{name}: cannot be read: not UTF-8 text", line))
            continue
        except OSError as exc:
            problems.append(Problem(("include",), f"{name}: cannot be read ({exc})", line))
            continue
        if included.problems or not isinstance(included.data, dict):
            reasons = "; ".join(str(p) for p in included.problems) or "not a mapping"
            problems.append(Problem(("include",), f"{name}: {reasons}", line))
            continue
        for kind, prefix in (("operators", "user"), ("queues", "line")):
            entries = included.data.get(kind)
            if entries is None:
                continue
            if not isinstance(entries, list):
                problems.append(Problem(("include",), f"{name}: {kind} must be a list", line))
                continue
            own = data.setdefault(kind, [])
            if not isinstance(own, list):
                continue
            ids = {e.get("bitrix_id") for e in own if isinstance(e, dict)}
            for entry in entries:
                if not isinstance(entry, dict) or entry.get("bitrix_id") in ids:
                    continue
                entry = dict(entry)
                if fold(str(entry.get("key", ""))) in taken:
                    entry["key"] = f"{prefix}{entry.get('bitrix_id')}"
                taken.add(fold(str(entry.get("key", ""))))
                own.append(entry)
    return problems


def parse_config(
    text: str, env: Mapping[str, str], source: str = "config", base_dir: Path | None = None
) -> Config:
    """Validate config text; raises :class:`ConfigError` listing every problem.

    ``base_dir`` is where ``include:`` files are looked for (the config file's folder).
    """
    with _collector_paused():
        try:
            # the line of every key is needed only to report a problem: a valid file (100,000
            # operators) is read without the line map, and a file with problems is read again
            # with it, by the very same steps
            return _parse_config(text, env, source, base_dir, track_lines=False)
        except ConfigError:
            return _parse_config(text, env, source, base_dir, track_lines=True)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while a config is read: a file of 100,000 operators makes
    millions of objects, which set off collections of the whole heap over and over (a
    quarter of the time), to find nothing to free: what is read holds no reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_config(
    text: str, env: Mapping[str, str], source: str, base_dir: Path | None, *, track_lines: bool
) -> Config:
    doc = parse_yaml(text, track_lines=track_lines)
    if doc.problems and doc.data is None:
        raise ConfigError(source, doc.problems)
    if doc.data is None:
        raise ConfigError(
            source, [Problem((), "the file is empty; start from the sample config.yaml")]
        )
    if not isinstance(doc.data, dict):
        raise ConfigError(
            source,
            [
                Problem(
                    (),
                    "must be a YAML mapping of sections (bitrix24:, telegram:, ...)",
                    doc.lines.get(()),
                )
            ],
        )
    data: dict[str, Any] = doc.data
    # only the values the reader saw a "$" in may hold a ${VAR}
    for path in doc.dollars:
        _set_path(data, path, interpolate(_value_at(data, path), env))
    from_env = _apply_env(data, env)

    problems = list(doc.problems)
    if "include" in data:
        problems += _merge_includes(data, base_dir, doc.lines.get(("include",)))
    config, found, more = _validate(data, doc, from_env)
    problems += found
    problems += _cross_checks(data, doc)
    if problems or config is None:
        raise ConfigError(source, sorted(problems, key=_line_key), more=more)
    # the plain data goes a slice at a time: 100,000 entries freed at once hold the GIL for
    # tens of ms, and a reload reads the file in a thread beside the event loop
    for section in data.values():
        if isinstance(section, list):
            while section:
                del section[-_CHUNK:]
    return config


_ENTRIES: Final[dict[str, TypeAdapter[tuple[Any, ...]]]] = {
    "supervisors": TypeAdapter(tuple[Person, ...]),
    "admins": TypeAdapter(tuple[Person, ...]),
    "chats": TypeAdapter(tuple[Chat, ...]),
    "operators": TypeAdapter(tuple[Operator, ...]),
    "queues": TypeAdapter(tuple[Queue, ...]),
}
_CHUNK: Final = 100  # entries validated (or freed) at once: a ms holding the GIL, few errors


def _validate(
    data: dict[str, Any], doc: YamlDocument, from_env: Mapping[KeyPath, str]
) -> tuple[Config | None, list[Problem], bool]:
    """The config, or its problems; True when more were found than are worth listing.

    Long lists (100,000 operators) are validated a chunk at a time, stopping once
    :data:`MAX_PROBLEMS` are found: a file of a million broken entries would otherwise
    cost gigabytes of error objects.
    """
    lists = {kind: data[kind] for kind in _ENTRIES if isinstance(data.get(kind), list)}
    problems: list[Problem] = []
    config: Config | None = None
    try:
        config = Config.model_validate({k: v for k, v in data.items() if k not in lists})
    except ValidationError as exc:
        problems += _validation_problems(exc, doc, from_env)
    entries: dict[str, tuple[Any, ...]] = {}
    for kind, items in lists.items():
        valid: list[Any] = []
        for start in range(0, len(items), _CHUNK):
            if len(problems) >= MAX_PROBLEMS:
                return None, problems, True
            try:
                valid += _ENTRIES[kind].validate_python(items[start : start + _CHUNK])
            except ValidationError as exc:
                problems += _validation_problems(exc, doc, from_env, (kind,), start)
        entries[kind] = tuple(valid)
    if config is None or problems:
        return None, problems, False
    return config.model_copy(update=entries), problems, False


def _line_key(problem: Problem) -> int:
    return problem.line if problem.line is not None else 0


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` for every kind of problem."""
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(
            str(path), [Problem((), "file not found (use --config PATH or set BOT_CONFIG)")]
        ) from None
    except FileTooLarge:
        raise ConfigError(str(path), [Problem((), f"cannot be read: {TOO_LARGE}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(str(path), [Problem((), f"cannot be read: {reason}")]) from None
    environ = os.environ if env is None else env
    config = parse_config(text, environ, source=str(path), base_dir=path.resolve().parent)
    oauth = config.bitrix24.oauth
    if oauth is not None and not Path(oauth.tokens_file).is_absolute():
        tokens = str(path.resolve().parent / oauth.tokens_file)
        bitrix24 = config.bitrix24.model_copy(
            update={"oauth": oauth.model_copy(update={"tokens_file": tokens})}
        )
        config = config.model_copy(update={"bitrix24": bitrix24})
    stored = config.storage.path
    if stored != ":memory:" and not Path(stored).is_absolute():
        # next to the config, wherever the bot is started from; the url (PostgreSQL) stays
        storage = config.storage.model_copy(update={"path": str(path.resolve().parent / stored)})
        config = config.model_copy(update={"storage": storage})
    return config


def config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config`` wins, then ``BOT_CONFIG``, then ``./config.yaml``."""
    environ = os.environ if env is None else env
    return Path(cli_value or environ.get(ENV_CONFIG) or "config.yaml")


_WRITTEN_CODE = re.compile(r"/rest/\d+/[^/?#\s]+")


def _written(data: Any, path: KeyPath) -> str:
    """The value at ``path`` as the file itself gives it: ``${VAR}`` read as empty."""
    value = data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return interpolate(value, {}).strip() if isinstance(value, str) else ""


def config_warnings(config: Config, text: str) -> list[str]:
    """What ``check`` warns about in a valid config, one line each: nobody to serve or nobody
    to transfer to, and secrets written in the file instead of read from the environment
    (never the secret itself)."""
    lines: list[str] = []
    if not config.supervisors:
        lines.append(
            "no supervisors: nobody may use the bot; list Telegram user IDs under supervisors:"
        )
    if not config.operators and not config.queues:
        lines.append(
            "no operators and no queues: nobody to transfer dialogs to; list them under "
            "operators: and queues: (or run directory sync)"
        )
    warnings: list[Problem] = []
    doc = parse_yaml(text)
    data = doc.data if isinstance(doc.data, dict) else {}
    token, webhook = ("telegram", "token"), ("bitrix24", "webhook_url")
    if _written(data, token):
        warnings.append(
            Problem(
                token,
                f"the bot's token is written in the file: move it to the environment "
                f"(export {ENV_TOKEN}=<token>) and write token: ${{{ENV_TOKEN}}}",
                doc.line_of(token),
            )
        )
    if _WRITTEN_CODE.search(_written(data, webhook)):
        warnings.append(
            Problem(
                webhook,
                f"the webhook's secret code is written in the file: move the URL to the "
                f"environment (export {ENV_WEBHOOK}=https://<portal>/rest/<user_id>/<code>/) "
                f"and write webhook_url: ${{{ENV_WEBHOOK}}}",
                doc.line_of(webhook),
            )
        )
    return lines + [str(warning) for warning in warnings]
