"""Tests of the command grammar: dialog forms, links, limits, the words after the dialogs,
usage errors, /finish, unknown commands, garbage input."""

from __future__ import annotations

import random

import pytest

from bot.command import (
    MAX_DIALOGS,
    DialogKind,
    DialogRef,
    TransferCommand,
    UsageError,
    closest_command,
    is_marked_target,
    parse_dialog,
    parse_finish,
    parse_transfer,
)

CHAT = DialogKind.CHAT
SESSION = DialogKind.SESSION
PORTAL = "https://acme.bitrix24.ru/online/"


def chat(number: int) -> DialogRef:
    return DialogRef(CHAT, number)


def session(number: int) -> DialogRef:
    return DialogRef(SESSION, number)


def usage_error(args: str | None, bare: DialogKind = CHAT) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_transfer(args, bare)
    return info.value


# ---- one dialog word --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("2043", chat(2043)),
        ("#2043", chat(2043)),
        ("chat2043", chat(2043)),
        ("CHAT2043", chat(2043)),
        ("Chat2043", chat(2043)),
        ("s3567", session(3567)),
        ("S3567", session(3567)),
        ("session:3567", session(3567)),
        ("SESSION:3567", session(3567)),
        ("№3567", session(3567)),
        ("1", chat(1)),
        ("2147483647", chat(2**31 - 1)),
        ("(2043)", chat(2043)),
        ("2043.", chat(2043)),
    ],
)
def test_dialog_forms(word: str, expected: DialogRef) -> None:
    assert parse_dialog(word) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("2043", session(2043)),
        ("#2043", chat(2043)),
        ("chat2043", chat(2043)),
        ("s2043", session(2043)),
        ("№2043", session(2043)),
    ],
)
def test_bare_numbers_are_sessions_when_configured(word: str, expected: DialogRef) -> None:
    assert parse_dialog(word, DialogKind.SESSION) == expected


def test_dialog_ref_prints_as_typed() -> None:
    assert str(chat(2043)) == "2043"
    assert str(session(3567)) == "s3567"


# ---- pasted links -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (f"{PORTAL}?IM_DIALOG=chat2043", chat(2043)),
        (f"{PORTAL}?IM_HISTORY=imol|3567", session(3567)),
        (f"{PORTAL}?IM_HISTORY=imol%7C3567", session(3567)),
        (f"{PORTAL}?IM_HISTORY=imol%7c3567", session(3567)),
        ("http://acme.bitrix24.ru/online/?IM_DIALOG=chat2043", chat(2043)),
        (f"{PORTAL}?foo=1&IM_DIALOG=chat2043&bar=2", chat(2043)),
        (f"{PORTAL}?utm_source=tg&IM_HISTORY=imol%7C3567", session(3567)),
        (f"{PORTAL}?im_dialog=CHAT2043", chat(2043)),
        (f"{PORTAL}?IM_DIALOG=chat2043#top", chat(2043)),
        (f"<{PORTAL}?IM_DIALOG=chat2043>", chat(2043)),
    ],
)
def test_links(link: str, expected: DialogRef) -> None:
    assert parse_dialog(link) == expected
    assert parse_transfer(f"{link} @anna") == TransferCommand((expected,), ("@anna",))


def test_link_kind_does_not_depend_on_the_bare_number_setting() -> None:
    assert parse_dialog(f"{PORTAL}?IM_DIALOG=chat2043", SESSION) == chat(2043)


@pytest.mark.parametrize(
    "link",
    [
        f"{PORTAL}?IM_DIALOG=chatabc",
        f"{PORTAL}?IM_DIALOG=",
        f"{PORTAL}?IM_DIALOG=2043",
        f"{PORTAL}?IM_HISTORY=imol|x",
        f"{PORTAL}?IM_HISTORY=chat2043",
        f"{PORTAL}?IM_DIALOG=chat2043%20",
    ],
)
def test_bad_links(link: str) -> None:
    error = usage_error(f"{link} @anna")
    assert (error.reason, error.token) == ("bad_link", link)


@pytest.mark.parametrize(
    "link",
    [
        f"{PORTAL}?IM_DIALOG=chat0",
        f"{PORTAL}?IM_HISTORY=imol|0",
        f"{PORTAL}?IM_DIALOG=chat9999999999",
        f"{PORTAL}?IM_HISTORY=imol%7C4294967296",
    ],
)
def test_links_with_zero_or_huge_numbers_are_rejected(link: str) -> None:
    error = usage_error(f"{link} @anna")
    assert error.reason in ("bad_link", "bad_dialog")
    assert error.token == link


# ---- whole commands ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "dialogs", "target"),
    [
        ("2043 @anna", [chat(2043)], "@anna"),
        ("2043 anna", [chat(2043)], "anna"),
        ("2043 #support", [chat(2043)], "#support"),
        ("2043 queue:3", [chat(2043)], "queue:3"),
        ("2043 user:15", [chat(2043)], "user:15"),
        ("s3567 queue:support", [session(3567)], "queue:support"),
        ("2043 2044 @anna", [chat(2043), chat(2044)], "@anna"),
        ("2043,2044 @anna", [chat(2043), chat(2044)], "@anna"),
        ("2043 , 2044,  s7 ;  @anna", [chat(2043), chat(2044), session(7)], "@anna"),
        ("  2043\n2044\t@anna \n", [chat(2043), chat(2044)], "@anna"),
        ("2043\u00a0@anna", [chat(2043)], "@anna"),
        (
            "chat1 #2 s3 session:4 №5 @bob",
            [chat(1), chat(2), session(3), session(4), session(5)],
            "@bob",
        ),
    ],
)
def test_transfer_commands(args: str, dialogs: list[DialogRef], target: str) -> None:
    assert parse_transfer(args) == TransferCommand(tuple(dialogs), (target,))


def test_target_is_kept_as_typed() -> None:
    assert parse_transfer("2043 @AnNa").words == ("@AnNa",)


@pytest.mark.parametrize(
    ("args", "dialogs", "words"),
    [
        ("2043 Anna Smirnova", [chat(2043)], ("Anna", "Smirnova")),
        ("2043 Анна Смирнова", [chat(2043)], ("Анна", "Смирнова")),
        ("2043 @bob please", [chat(2043)], ("@bob", "please")),
        ("2043 @anna @bob", [chat(2043)], ("@anna", "@bob")),
        ("2043 Anna Smirnova please!", [chat(2043)], ("Anna", "Smirnova", "please!")),
        ("2043 2044 @анна", [chat(2043), chat(2044)], ("@анна",)),
        ("2043 anna bob", [chat(2043)], ("anna", "bob")),
        ("foo @anna", [], ("foo", "@anna")),
        ("2043 dialog @anna", [chat(2043)], ("dialog", "@anna")),
        ("2043 -5 @anna", [chat(2043)], ("-5", "@anna")),
    ],
)
def test_the_words_after_the_dialogs_are_kept_for_the_directory(
    args: str, dialogs: list[DialogRef], words: tuple[str, ...]
) -> None:
    assert parse_transfer(args) == TransferCommand(tuple(dialogs), words)


@pytest.mark.parametrize(
    ("args", "dialog"),
    [
        ("№ 3568 @anna", session(3568)),
        ("№3568 @anna", session(3568)),
        ("№\u00a03568 @anna", session(3568)),
        ("s 3567 @anna", session(3567)),
        ("S3567 @anna", session(3567)),
        ("S 3567 @anna", session(3567)),
        ("session: 3567 @anna", session(3567)),
        ("# 2043 @anna", chat(2043)),
        ("chat 2043 @anna", chat(2043)),
    ],
)
def test_a_prefix_typed_apart_from_its_number(args: str, dialog: DialogRef) -> None:
    assert parse_transfer(args) == TransferCommand((dialog,), ("@anna",))
    assert parse_dialog(args.rsplit(" ", 1)[0]) == dialog


def test_a_prefix_apart_joins_only_a_number() -> None:
    assert parse_transfer("2043 s anna").words == ("s", "anna")
    assert usage_error("2043 # support").token == "#"


def test_bare_numbers_in_a_command_follow_the_setting() -> None:
    command = parse_transfer("2043 #2044 s2045 @anna", DialogKind.SESSION)
    assert command.dialogs == (session(2043), chat(2044), session(2045))


def test_duplicates_collapse_keeping_the_first_order() -> None:
    command = parse_transfer("2044 2043 2044 #2043 chat2043 s2043 №2043 @anna")
    assert command.dialogs == (chat(2044), chat(2043), session(2043))


def test_chat_and_session_with_the_same_number_are_different_dialogs() -> None:
    assert parse_transfer("2043 s2043 @anna").dialogs == (chat(2043), session(2043))


def test_link_and_number_of_the_same_dialog_collapse() -> None:
    command = parse_transfer(f"2043 {PORTAL}?IM_DIALOG=chat2043 @anna")
    assert command.dialogs == (chat(2043),)


def numbers(count: int) -> str:
    return " ".join(str(1000 + i) for i in range(count))


def test_twenty_dialogs_are_fine() -> None:
    assert MAX_DIALOGS == 20
    command = parse_transfer(f"{numbers(20)} @anna")
    assert command.dialogs == tuple(chat(1000 + i) for i in range(20))


def test_twenty_one_dialogs_are_too_many() -> None:
    error = usage_error(f"{numbers(21)} @anna")
    assert (error.reason, error.token) == ("too_many", "20")


def test_the_limit_counts_distinct_dialogs() -> None:
    command = parse_transfer(f"{numbers(20)} {numbers(20)} @anna")
    assert len(command.dialogs) == 20


# ---- usage errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "dialogs", "target"),
    [
        (None, (), None),
        ("", (), None),
        ("   ", (), None),
        (" , ;\n", (), None),
        ("@anna", (), "@anna"),
        ("#support", (), "#support"),
        ("2043", (chat(2043),), None),
        ("2043 2044", (chat(2043), chat(2044)), None),
        ("2043 s2044", (chat(2043), session(2044)), None),
        ("2043 ,", (chat(2043),), None),
    ],
)
def test_missing_parts_are_left_for_a_reply_or_a_picker(
    args: str | None, dialogs: tuple[DialogRef, ...], target: str | None
) -> None:
    assert parse_transfer(args) == TransferCommand(dialogs, (target,) if target else ())


@pytest.mark.parametrize(
    ("args", "reason", "token", "dialogs"),
    [
        ("2043 @@x", "bad_target", "@@x", (chat(2043),)),
        ("2043 a<b>", "bad_target", "a<b>", (chat(2043),)),
        ("2043 2044 a<b> @anna", "bad_dialog", "a<b>", (chat(2043), chat(2044))),
        ("+5 @anna", "bad_dialog", "+5", ()),
        ("2043 @", "bad_target", "@", (chat(2043),)),
        ("2043 #", "bad_target", "#", (chat(2043),)),
        ("2043 anna!", "bad_target", "anna!", (chat(2043),)),
        ("a<b>", "bad_target", "a<b>", ()),
        ("2043 @anna 2044", "bad_dialog", "@anna", ()),  # a dialog last: all are dialogs
    ],
)
def test_usage_errors(
    args: str | None, reason: str, token: str | None, dialogs: tuple[DialogRef, ...]
) -> None:
    error = usage_error(args)
    assert (error.reason, error.token, error.dialogs) == (reason, token, dialogs)


@pytest.mark.parametrize(
    "word",
    ["0", "#0", "chat0", "s0", "session:0", "№0", "00", "2147483648", "9999999999", "99999999999"],
)
def test_zero_and_huge_numbers_are_rejected(word: str) -> None:
    error = usage_error(f"{word} @anna")
    assert (error.reason, error.token) == ("bad_dialog", word)


@pytest.mark.parametrize("word", ["-5", "20.43", "1e3", "0x10", "s", "chat", "s-1"])
def test_number_lookalikes_are_not_dialogs(word: str) -> None:
    # left to the directory, which finds no such name either: see tests/test_flow.py
    assert parse_transfer(f"{word} @anna") == TransferCommand((), (word, "@anna"))
    with pytest.raises(UsageError) as info:
        parse_finish(word)
    assert (info.value.reason, info.value.token) == ("bad_dialog", word)


def test_usage_error_message_names_reason_and_token() -> None:
    error = usage_error("0 @anna")
    assert str(error) == "bad_dialog: 0"
    assert str(UsageError("empty")) == "empty"


# ---- /finish ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "dialogs"),
    [
        (None, ()),
        ("2043", (chat(2043),)),
        ("2043 2044, s3567", (chat(2043), chat(2044), session(3567))),
        ("№ 3568", (session(3568),)),
        ("2043 #2044", (chat(2043), chat(2044))),
    ],
)
def test_finish_takes_dialogs(args: str | None, dialogs: tuple[DialogRef, ...]) -> None:
    assert parse_finish(args) == dialogs


@pytest.mark.parametrize(
    ("args", "reason", "token", "dialogs"),
    [
        ("2043 @bob", "finish_target", "@bob", (chat(2043),)),
        ("2043 #support", "finish_target", "#support", (chat(2043),)),
        ("2043 2044 user:15", "finish_target", "user:15", (chat(2043), chat(2044))),
        ("@bob", "finish_target", "@bob", ()),
        ("abc", "bad_dialog", "abc", ()),
        ("2043 bob", "bad_dialog", "bob", ()),
        ("abc @bob", "bad_dialog", "abc", ()),
    ],
)
def test_finish_refuses_names_and_bad_dialogs(
    args: str, reason: str, token: str, dialogs: tuple[DialogRef, ...]
) -> None:
    with pytest.raises(UsageError) as info:
        parse_finish(args)
    assert (info.value.reason, info.value.token, info.value.dialogs) == (reason, token, dialogs)


@pytest.mark.parametrize(
    ("word", "marked"),
    [
        ("@anna", True),
        ("#support", True),
        ("queue:3", True),
        ("USER:15", True),
        ("#2043", False),
        ("anna", False),
        ("2043", False),
    ],
)
def test_marked_targets(word: str, marked: bool) -> None:
    assert is_marked_target(word) is marked


# ---- unknown commands --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "guess"),
    [
        ("trasnfer", "transfer"),
        ("Transfr", "transfer"),
        ("TRANSFERR", "transfer"),
        ("трансфер", "transfer"),
        ("finsh", "finish"),
        ("финиш", "finish"),
        ("histroy", "history"),
        ("opertors", "operators"),
        ("qeues", "queues"),
        ("foo", None),
        ("x" * 5000, None),
        ("", None),
    ],
)
def test_closest_command(word: str, guess: str | None) -> None:
    assert closest_command(word) == guess


# ---- garbage in, only UsageError out ----------------------------------------------------


def outcome(args: str) -> TransferCommand | UsageError:
    """The command, or the UsageError; any other exception propagates."""
    try:
        return parse_transfer(args)
    except UsageError as error:
        return error


@pytest.mark.parametrize(
    "args",
    [
        pytest.param("² @anna", id="superscript-digit"),
        pytest.param("①2 @anna", id="circled-digit"),
        pytest.param("2043 ²", id="superscript-digit-as-target"),
        pytest.param("http://[::1/?IM_DIALOG=chat5 @anna", id="broken-ipv6-link"),
        pytest.param("https://[oops?IM_HISTORY=imol|5 @anna", id="broken-bracket-link"),
        pytest.param("\u200b2043 @anna", id="zero-width-space"),
        pytest.param("2043 \x00", id="nul"),
        pytest.param("2043 🙂", id="emoji-target"),
        pytest.param("🙂 @anna", id="emoji-dialog"),
        pytest.param("2043 @аня", id="cyrillic-target"),
        pytest.param("𝟙𝟚 @anna", id="math-digits"),
        pytest.param("%%% ??? &&&", id="punctuation"),
        pytest.param("?IM_DIALOG=chat1&IM_HISTORY=imol|2 @a", id="both-link-params"),
        pytest.param("2043 " + "a" * 100_000, id="long-target"),
        pytest.param("1" * 100_000 + " @anna", id="long-number"),
        pytest.param("2043 " * 5_000 + "@anna", id="many-words"),
        pytest.param("\n\n\n2043\r\n@anna\r\n", id="newlines"),
    ],
)
def test_garbage_raises_only_usage_error(args: str) -> None:
    result = outcome(args)
    assert isinstance(result, TransferCommand | UsageError)


ALPHABET = "0123456789 ,;\n\t#@:|%?&=./-_()<>[]abcsuqehtmolACHIMDGLOSTY№²³①٣𝟙\u200b\u00a0\x00аяЖ🙂"
PIECES = ["chat", "s", "session:", "user:", "queue:", "?IM_DIALOG=chat", "IM_HISTORY=imol", "%7C"]


def random_args(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 6)):
        if rng.random() < 0.3:
            parts.append(rng.choice(PIECES))
        parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))))
    return "".join(parts)


def test_random_garbage_raises_only_usage_error() -> None:
    rng = random.Random(20430)
    crashes: list[tuple[str, str]] = []
    for _ in range(3_000):
        args = random_args(rng)
        try:
            outcome(args)
        except Exception as exc:  # the bug this test is here to catch
            crashes.append((args, f"{type(exc).__name__}: {exc}"))
    assert crashes == [], f"{len(crashes)} inputs crashed, e.g. {crashes[:3]}"
