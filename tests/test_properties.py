"""Property tests: the parsers and the directory take any text and answer in their own terms.

Every public entry point that reads text a person typed (the ``/transfer`` and ``/finish``
grammar, the config file, a target word) either returns its typed result or raises its own
typed error, whatever it is given. Valid commands, however they are spelled, parse back to
exactly the dialogs and target they were built from.
"""

from __future__ import annotations

import string
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.command import (
    MAX_DIALOGS,
    DialogKind,
    DialogRef,
    TransferCommand,
    UsageError,
    parse_dialog,
    parse_finish,
    parse_transfer,
)
from bot.config import Config, ConfigError, parse_config
from bot.directory import Directory, Kind, ResolveError, Target
from tests.harness import CONFIG_YAML

# database=None: nothing replayed from earlier runs, so every run has the same size;
# a failure prints its falsifying example instead
FAST = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FEW = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_SAMPLE_ENV = {
    "BITRIX24_WEBHOOK_URL": "http://127.0.0.1:1/rest/1/code/",
    "TELEGRAM_BOT_TOKEN": "4242424242:AAE_e2e-test-token-for-the-fake-bot-api",
}

USAGE_REASONS = {
    "empty",
    "no_dialog",
    "bad_dialog",
    "bad_link",
    "bad_target",
    "too_many",
    "finish_target",
}
MAX_NUMBER = 2**31 - 1

# ---- text strategies -------------------------------------------------------------------------

# pieces of real commands, links and near misses, glued together at random
FRAGMENTS = [
    "2043",
    "#2043",
    "chat2043",
    "CHAT",
    "s3567",
    "session:",
    "№",
    "@",
    "#",
    "queue:",
    "user:",
    "user:15",
    "queue:3",
    "@anna",
    "#support",
    "0",
    "00000000000",
    "4294967296",
    "2147483648",
    "9" * 30,
    "https://x.bitrix24.ru/online/?IM_DIALOG=chat2043",
    "https://x.bitrix24.ru/online/?IM_HISTORY=imol|3567",
    "?IM_HISTORY=imol%7C3567",
    "?IM_DIALOG=",
    "IM_HISTORY",
    "imol|",
    "%7C",
    "%",
    "%%",
    "%ZZ",
    "&",
    "=",
    "?",
    "#frag",
    "http://",
    "://",
    " ",
    ",",
    ";",
    "\n",
    "\t",
    "\x00",
    "\x1c",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u00a0",
    "\u2028",
    "\u0301",
    "٢٠٤٣",  # Arabic-Indic digits
    "²",
    "①",
    "İ",
    "ß",
    "K",  # Kelvin sign, folds to k
    "😀",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    ".",
    "<b>x</b>",
    '<a href="http://evil">x</a>',
]

unicode_text = st.text(
    alphabet=st.characters(
        codec=None,
        categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cf", "Co"],
    ),
    max_size=60,
)
glued = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=25).map(
    "".join
)
long_text = st.one_of(
    st.text(min_size=1000, max_size=4500),
    st.lists(st.sampled_from(FRAGMENTS), min_size=200, max_size=700).map(" ".join),
)
any_text = st.one_of(st.text(), unicode_text, glued, long_text)
bare_setting = st.sampled_from(list(DialogKind))


def _check_ref(ref: Any) -> None:
    assert isinstance(ref, DialogRef)
    assert isinstance(ref.kind, DialogKind)
    assert type(ref.number) is int
    assert 1 <= ref.number <= MAX_NUMBER


def _check_usage_error(err: UsageError) -> None:
    assert err.reason in USAGE_REASONS
    assert err.token is None or isinstance(err.token, str)


# ---- the grammar never fails in any other way -----------------------------------------------


@FAST
@given(args=st.one_of(st.none(), any_text), bare=bare_setting)
@example(args="2043 @anna", bare=DialogKind.CHAT)
@example(args="\x00", bare=DialogKind.CHAT)
@example(args="?IM_DIALOG=chat%", bare=DialogKind.CHAT)
@example(args=" ".join(str(n) for n in range(1, 101)), bare=DialogKind.CHAT)
def test_parse_transfer_returns_a_command_or_raises_usage_error(
    args: str | None, bare: DialogKind
) -> None:
    try:
        result = parse_transfer(args, bare)
    except UsageError as err:
        _check_usage_error(err)
        return
    assert isinstance(result, TransferCommand)
    assert isinstance(result.dialogs, tuple)
    assert len(result.dialogs) <= MAX_DIALOGS
    assert len(set(result.dialogs)) == len(result.dialogs)
    for ref in result.dialogs:
        _check_ref(ref)
    assert all(isinstance(word, str) and word for word in result.words)


@FAST
@given(args=st.one_of(st.none(), any_text), bare=bare_setting)
def test_parse_finish_returns_dialogs_or_raises_usage_error(
    args: str | None, bare: DialogKind
) -> None:
    try:
        result = parse_finish(args, bare)
    except UsageError as err:
        _check_usage_error(err)
        return
    assert isinstance(result, tuple)
    assert len(result) <= MAX_DIALOGS
    assert len(set(result)) == len(result)
    for ref in result:
        _check_ref(ref)


@FAST
@given(token=any_text, bare=bare_setting)
@example(token="", bare=DialogKind.CHAT)
@example(token="https://x/?IM_HISTORY=imol%7C", bare=DialogKind.CHAT)
@example(token="?im_dialog=chat0", bare=DialogKind.SESSION)
def test_parse_dialog_returns_a_ref_or_raises_usage_error(token: str, bare: DialogKind) -> None:
    try:
        ref = parse_dialog(token, bare)
    except UsageError as err:
        _check_usage_error(err)
        assert err.reason in {"bad_dialog", "bad_link"}
        return
    _check_ref(ref)


# ---- valid commands round-trip ----------------------------------------------------------------

numbers = st.integers(min_value=1, max_value=MAX_NUMBER)
refs = st.builds(DialogRef, st.sampled_from(list(DialogKind)), numbers)

HOSTS = ["https://x.bitrix24.ru/online/", "https://portal.example.com/online/", "x.bitrix24.ru/"]


def _case(draw: st.DrawFn, word: str) -> str:
    """The grammar's prefixes are case-insensitive: write them in any case."""
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)


@st.composite
def spelled(draw: st.DrawFn, ref: DialogRef, bare: DialogKind) -> str:
    """One of the grammar's ways to write ``ref``."""
    n = ref.number
    host = draw(st.sampled_from(HOSTS))
    if ref.kind is DialogKind.CHAT:
        forms = [
            f"#{n}",
            f"{_case(draw, 'chat')}{n}",
            f"{host}?IM_DIALOG={_case(draw, 'chat')}{n}",
            f"{host}?IM_DIALOG=chat{n}#message",
            f"{host}?foo=1&IM_DIALOG=chat{n}",
        ]
    else:
        forms = [
            f"{_case(draw, 's')}{n}",
            f"{_case(draw, 'session:')}{n}",
            f"№{n}",
            f"{host}?IM_HISTORY=imol|{n}",
            f"{host}?IM_HISTORY=imol%7C{n}",
            f"{host}?IM_HISTORY=imol%7c{n}&IM_LINES=1",
        ]
    if ref.kind is bare:
        forms.append(str(n))
    return draw(st.sampled_from(forms))


KEY_ALPHABET = string.ascii_letters + string.digits + "_-"
keys = st.text(
    alphabet=KEY_ALPHABET, min_size=1, max_size=20
).filter(
    lambda k: (
        k[0].isalpha()
        # a bare "s12" or "chat12" is a dialog, not a name
        and not (k.lower().startswith("s") and k[1:].isdigit())
        and not (k.lower().startswith("chat") and k[4:].isdigit())
    )
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    """A target word in one of its forms."""
    key = draw(keys)
    return draw(
        st.sampled_from(
            [
                f"@{key}",
                f"#{key}",
                f"queue:{key}",
                key,
                f"user:{draw(numbers)}",
                f"queue:{draw(numbers)}",
            ]
        )
    )


@st.composite
def commands(
    draw: st.DrawFn, with_target: bool | None = None
) -> tuple[str, DialogKind, tuple[DialogRef, ...], str | None]:
    """A valid ``/transfer`` argument string and what it must parse to."""
    bare = draw(bare_setting)
    distinct = draw(st.lists(refs, min_size=1, max_size=MAX_DIALOGS, unique=True))
    # name some dialogs again, in other spellings, anywhere after their first mention
    order = list(distinct)
    for _ in range(draw(st.integers(0, 5))):
        ref = draw(st.sampled_from(distinct))
        first = order.index(ref)
        order.insert(draw(st.integers(first + 1, len(order))), ref)
    words = [draw(spelled(ref, bare)) for ref in order]
    if with_target is None:
        with_target = draw(st.booleans())
    target = draw(targets()) if with_target else None
    if target is not None:
        words.append(target)
    separators = st.sampled_from([" ", ",", ", ", " ,", ";", "\n", "\t", "  ", " , "])
    text = words[0]
    for word in words[1:]:
        text += draw(separators) + word
    text = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", " ", ","]))
    return text, bare, tuple(distinct), target


@FAST
@given(command=commands())
@example(
    command=(
        "2043 s3567 chat2043 @anna",
        DialogKind.CHAT,
        (
            DialogRef(DialogKind.CHAT, 2043),
            DialogRef(DialogKind.SESSION, 3567),
        ),
        "@anna",
    )
)
def test_valid_commands_parse_back_to_their_dialogs_and_target(
    command: tuple[str, DialogKind, tuple[DialogRef, ...], str | None],
) -> None:
    text, bare, dialogs, target = command
    assert parse_transfer(text, bare) == TransferCommand(dialogs, (target,) if target else ())


@FAST
@given(command=commands(with_target=False))
def test_valid_dialog_lists_parse_back_for_finish(
    command: tuple[str, DialogKind, tuple[DialogRef, ...], str | None],
) -> None:
    text, bare, dialogs, _ = command
    assert parse_transfer(text, bare) == TransferCommand(dialogs)
    assert parse_finish(text, bare) == dialogs


@FAST
@given(ref=refs)
def test_a_dialog_ref_prints_as_it_parses(ref: DialogRef) -> None:
    assert parse_dialog(str(ref)) == ref
    assert parse_transfer(f"{ref} @anna") == TransferCommand((ref,), ("@anna",))


@FAST
@given(ref=refs, bare=bare_setting, data=st.data())
def test_every_spelling_of_a_dialog_parses_to_it(
    ref: DialogRef, bare: DialogKind, data: st.DataObject
) -> None:
    word = data.draw(spelled(ref, bare))
    wrapped = data.draw(st.sampled_from(["{}", "({})", "[{}]", "<{}>", "{}."])).format(word)
    assert parse_dialog(wrapped, bare) == ref


@FAST
@given(refs_=st.lists(refs, min_size=MAX_DIALOGS + 1, max_size=60, unique=True), target=targets())
def test_more_than_the_limit_is_refused_as_too_many(refs_: list[DialogRef], target: str) -> None:
    text = " ".join(f"#{r.number}" if r.kind is DialogKind.CHAT else f"s{r.number}" for r in refs_)
    for args in (text, f"{text} {target}"):
        try:
            parse_transfer(args)
        except UsageError as err:
            assert err.reason == "too_many"
            assert err.token == str(MAX_DIALOGS)
        else:
            raise AssertionError(f"{len(refs_)} dialogs were accepted")


# ---- the config file ----------------------------------------------------------------------------

ENV_NAMES = ["BITRIX24_WEBHOOK_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "RATE", "X"]
envs = st.dictionaries(
    st.sampled_from(ENV_NAMES),
    st.one_of(
        st.text(max_size=30),
        st.sampled_from(
            [
                "https://p.bitrix24.ru/rest/1/abc/",
                "http://127.0.0.1:1/rest/1/c/",
                "123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "http://localhost:8081",
                "5",
            ]
        ),
    ),
    max_size=4,
)


def _check_config_outcome(text: str, env: dict[str, str]) -> None:
    try:
        config = parse_config(text, env)
    except ConfigError as err:
        assert err.problems, "a ConfigError names at least one problem"
        for problem in err.problems:
            line = str(problem)
            assert isinstance(line, str)
            assert line.strip()
            assert isinstance(problem.message, str)
            assert problem.message.strip()
            assert "Traceback" not in line
            assert 'File "' not in line
        assert "Traceback" not in str(err)
        return
    assert isinstance(config, Config)


@FAST
@given(text=any_text, env=envs)
@example(text="", env={})
@example(text="\x00", env={})
@example(text="a: \x07", env={})
@example(text="key: [1, 2", env={})
@example(text="- a\n- b", env={})
def test_parse_config_of_any_text_is_a_config_or_a_config_error(
    text: str, env: dict[str, str]
) -> None:
    _check_config_outcome(text, env)


# Documents with the real shape: the real top-level keys, with good and garbage values.

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "${BITRIX24_WEBHOOK_URL}",
            "${RATE:-3}",
            "$$",
            "${",
            "anna",
            "@anna_s",
            "https://p.bitrix24.ru/rest/1/abc/",
            "{dialog} {nope}",
            "{",
            "}",
            "{0}",
            "auto",
            "en",
            "ru",
            "chat",
            "session",
        ]
    ),
)
TOP_KEYS = [
    "bitrix24",
    "telegram",
    "language",
    "admin_contact",
    "supervisors",
    "chats",
    "announce_to",
    "dialog_numbers",
    "button_expiry_min",
    "operators",
    "queues",
    "messages",
]
INNER_KEYS = [
    "webhook_url",
    "timeout_s",
    "deadline_s",
    "rate_per_s",
    "burst",
    "legacy_transfer_id",
    "token",
    "api_url",
    "id",
    "name",
    "key",
    "bitrix_id",
    "aliases",
    "telegram",
    "en",
    "ru",
    "usage",
    "result.ok",
    "not_understood",
    "nosuchkey",
]
dict_keys = st.one_of(st.sampled_from(INNER_KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(dict_keys, children, max_size=5),
    ),
    max_leaves=25,
)
# real message keys (overridable in config), a made-up one, and any text
message_keys = st.one_of(
    st.sampled_from(["usage", "usage.bad_target", "result.ok", "not_understood", "nosuch"]),
    st.text(max_size=8),
)
entry = st.fixed_dictionaries(
    {},
    optional={
        "key": st.one_of(st.sampled_from(["anna", "bob", "Anna", "a b", ""]), scalars),
        "bitrix_id": st.one_of(st.integers(-3, 20), scalars),
        "name": scalars,
        "aliases": st.one_of(st.lists(st.sampled_from(["anna", "anya", "x"]), max_size=3), values),
        "telegram": st.one_of(st.sampled_from(["anna_s", "@anna_s", "@x"]), scalars),
        "id": st.one_of(st.integers(-3, 3), scalars),
    },
)
sections = st.fixed_dictionaries(
    {},
    optional={
        **{key: values for key in TOP_KEYS},
        "operators": st.one_of(st.lists(entry, max_size=4), values),
        "queues": st.one_of(st.lists(entry, max_size=4), values),
        "supervisors": st.one_of(st.lists(entry, max_size=4), values),
        "chats": st.one_of(st.lists(entry, max_size=4), values),
        "messages": st.one_of(
            st.dictionaries(
                st.sampled_from(["en", "ru", "de"]),
                st.one_of(st.dictionaries(message_keys, scalars, max_size=3), values),
                min_size=1,
                max_size=2,
            ),
            values,
        ),
    },
)
documents = st.one_of(
    sections,
    st.tuples(sections, st.dictionaries(st.text(max_size=8), values, max_size=3)).map(
        lambda pair: {**pair[1], **pair[0]}
    ),
    values,
)


@FAST
@given(document=documents, env=envs, flow=st.booleans())
@example(document={"messages": {"en": {"usage": 123}}}, env={}, flow=False)
def test_parse_config_of_any_yaml_document_is_a_config_or_a_config_error(
    document: Any, env: dict[str, str], flow: bool
) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    _check_config_outcome(text, env)


@FEW
@given(
    path=st.sampled_from(
        [
            ("bitrix24", "burst"),
            ("bitrix24", "webhook_url"),
            ("telegram", "token"),
            ("language",),
            ("announce_to",),
            ("button_expiry_min",),
            ("operators", 0, "bitrix_id"),
            ("operators", 1, "key"),
            ("operators", 0, "aliases"),
            ("queues", 0, "name"),
            ("supervisors", 0, "id"),
            ("chats", 1, "id"),
        ]
    ),
    garbage=values,
)
def test_the_sample_config_with_one_garbage_value_is_a_config_or_a_config_error(
    path: tuple[str | int, ...], garbage: Any
) -> None:
    data = yaml.safe_load(CONFIG_YAML)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = garbage
    _check_config_outcome(yaml.safe_dump(data, allow_unicode=True), _SAMPLE_ENV)


# Known hostile inputs, one test each so a failure names its cause.


def test_parse_config_with_a_control_character_is_a_config_error() -> None:
    _check_config_outcome("admin_contact: Olga\x00\n", {})


def test_parse_config_with_a_noncharacter_is_a_config_error() -> None:
    _check_config_outcome("admin_contact: \ufffe\n", {})


def test_parse_config_with_deep_nesting_is_a_config_error() -> None:
    _check_config_outcome("operators: " + "[" * 2000 + "]" * 2000 + "\n", {})


def test_parse_config_with_a_self_referencing_alias_is_a_config_error() -> None:
    _check_config_outcome("operators: &loop [*loop]\n", {})


def test_parse_config_with_a_non_text_message_override_is_a_config_error() -> None:
    for value in ("123", "[a, b]", "", "{x: 1}"):
        _check_config_outcome(f"messages:\n  en:\n    usage: {value}\n", {})


# ---- the directory ------------------------------------------------------------------------------

DIRECTORY = Directory.from_config(parse_config(CONFIG_YAML, _SAMPLE_ENV))

NAME_FRAGMENTS = [
    "@",
    "#",
    "queue:",
    "user:",
    "QUEUE:",
    "USER:",
    "anna",
    "Anna",
    "anya",
    "anna_s",
    "bob",
    "irina",
    "Ira",
    "support",
    "sup",
    "sales",
    "line",
    "Smirnova",
    "0",
    "15",
    "3",
    "99999999999",
    "-",
    "_",
    "\u200b",
    "\u0301",
    "İ",
    "ß",
    "😀",
    " ",
    "<",
    "&",
]
words = st.one_of(
    st.text(),
    unicode_text,
    st.lists(st.sampled_from(NAME_FRAGMENTS), max_size=6).map("".join),
    st.text(min_size=500, max_size=3000),
)


@FAST
@given(word=words)
@example(word="")
@example(word="@")
@example(word="user:0")
@example(word="queue:0000000000")
@example(word="user:abc")
@example(word="line")
@example(word="İ")
def test_resolve_returns_a_target_or_raises_a_resolve_error(word: str) -> None:
    try:
        target = DIRECTORY.resolve(word)
    except ResolveError as err:
        assert type(err) is not ResolveError, "always one of the subclasses"
        assert isinstance(err.token, str)
        for candidate in err.candidates:
            assert isinstance(candidate, Target)
        return
    assert isinstance(target, Target)
    assert isinstance(target.kind, Kind)
    assert target.bitrix_id > 0
    assert target.name


@FAST
@given(target=st.sampled_from([*DIRECTORY.operators, *DIRECTORY.queues]), data=st.data())
def test_every_listed_spelling_resolves_to_its_target(target: Target, data: st.DataObject) -> None:
    word = data.draw(st.sampled_from([*DIRECTORY.spellings(target), target.ref]))
    assert DIRECTORY.resolve(_case_of(data, word)) == target


def _case_of(data: st.DataObject, word: str) -> str:
    return "".join(c.upper() if data.draw(st.booleans()) else c for c in word)
