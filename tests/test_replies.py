"""Reply texts without Telegram: names, holders, truncation, splitting."""

from __future__ import annotations

import pytest

from bot.bitrix24.client import Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import DialogKind, DialogRef, UsageError
from bot.config import parse_config
from bot.directory import Directory, Kind, Target
from bot.flow import Misread
from bot.handoff import Outcome, Status
from bot.messages import Messages
from bot.replies import MAX_NAME, Replies, split_message
from tests.harness import CONFIG_YAML

CONFIG = parse_config(CONFIG_YAML, {})
DIRECTORY = Directory.from_config(CONFIG)
REPLIES = Replies(Messages(admin_contact="@it_ops"), DIRECTORY)
ANNA = DIRECTORY.resolve("@anna")
SUPPORT = DIRECTORY.resolve("#support")
REF = DialogRef(DialogKind.CHAT, 2043)


def dialog(owner: int, line: int | None = 3, name: str = "Ivan") -> Dialog:
    return Dialog(2043, name, owner, line, "whatsapp")


@pytest.mark.parametrize(
    ("owner", "line", "expected"),
    [
        (16, 3, "Bob Lee"),
        (99, 3, "user 99"),
        (0, 3, "Support line"),
        (0, None, "queue (unassigned)"),
        (0, 77, "queue (unassigned)"),
    ],
)
def test_the_previous_holder_is_named_from_the_directory(
    owner: int, line: int | None, expected: str
) -> None:
    assert REPLIES.holder(dialog(owner, line), "en") == expected


def test_the_previous_holder_in_russian() -> None:
    assert REPLIES.holder(dialog(99), "ru") == "пользователь 99"


def test_names_with_html_are_escaped() -> None:
    irina = DIRECTORY.resolve("@irina")
    text = REPLIES.outcome(Outcome(REF, Status.MOVED, dialog(16, name="<b>VIP</b>")), irina, "en")
    assert text == (
        '✅ Dialog 2043 «&lt;b&gt;VIP&lt;/b&gt;»: Bob Lee → Irina &lt;Ira&gt; &amp; "Co"'
    )


def test_a_long_dialog_name_is_shortened_for_the_phone() -> None:
    text = REPLIES.dialog(Outcome(REF, Status.MOVED, dialog(16, name="x" * 500)))
    assert text == f"2043 «{'x' * (MAX_NAME - 1)}…»"


def test_raw_ids_not_in_the_directory_read_as_user_n() -> None:
    stranger = Target(Kind.OPERATOR, 4242, "user 4242")
    assert REPLIES.target(stranger, "ru") == "пользователь 4242"


def test_failures_show_friendly_text_and_code() -> None:
    failed = Outcome(REF, Status.FAILED, error=BitrixError("ACCESS_ERROR", "x", 400))
    assert REPLIES.outcome(failed, ANNA, "en") == (
        "❌ Dialog 2043: No such dialog, or the bot's Bitrix24 user cannot see it. "
        "Check the number. <i>(ACCESS_ERROR)</i>"
    )


def test_queue_already_reads_as_waiting() -> None:
    already = Outcome(REF, Status.ALREADY, dialog(0))
    assert "already waiting in Support line" in REPLIES.outcome(already, SUPPORT, "en")


def test_announcement_lists_only_what_moved() -> None:
    outcomes = [
        Outcome(REF, Status.MOVED, dialog(16)),
        Outcome(DialogRef(DialogKind.CHAT, 9), Status.FAILED, error=BitrixError("X")),
        Outcome(REF, Status.ALREADY, dialog(15)),
    ]
    assert REPLIES.announcement(outcomes, ANNA, "Olga <admin>", "en") == [
        "🔁 Dialog 2043 «Ivan»: Bob Lee → Anna Smirnova, by Olga &lt;admin&gt;"
    ]
    assert REPLIES.announcement(outcomes[1:], ANNA, "Olga", "en") == []


def test_split_keeps_short_text_whole() -> None:
    assert split_message("a\nb") == ["a\nb"]
    assert split_message("") == [""]


def test_split_cuts_between_lines_under_the_limit() -> None:
    lines = [f"line {i} " + "x" * 90 for i in range(100)]
    chunks = split_message("\n".join(lines), limit=1000)
    assert all(len(c) <= 1000 for c in chunks)
    assert "\n".join(chunks).splitlines() == lines


def test_split_shortens_a_giant_line_to_one_message() -> None:
    chunks = split_message("short\n" + "y" * 2500, limit=1000)
    assert chunks == ["short", "y" * 999 + "…"]


def test_a_long_directory_is_cut_short_and_searchable() -> None:
    operators = "".join(
        f"  - {{key: op{i:04d}, bitrix_id: {i + 1}, name: Operator {i:04d}}}\n" for i in range(300)
    )
    directory = Directory.from_config(parse_config("operators:\n" + operators, {}))
    replies = Replies(Messages(), directory)
    lines = replies.listing(Kind.OPERATOR, "en").splitlines()
    assert len(lines) == 1 + 50 + 1
    assert lines[-1] == "…and 250 more. Search: <code>/operators anna</code>"
    found = replies.listing(Kind.OPERATOR, "en", "@op0123").splitlines()
    assert found[1:] == ["<code>@op0123</code> — Operator 0123 · 124"]
    assert replies.listing(Kind.OPERATOR, "en", "nobody").splitlines()[1] == "(none found)"


def test_did_you_mean_in_a_big_directory_finds_the_typo() -> None:
    operators = "".join(
        f"  - {{key: op{i:05d}, bitrix_id: {i + 1}, name: Operator {i:05d}}}\n"
        for i in range(10_000)
    )
    operators += "  - {key: anna, bitrix_id: 20001, name: Anna Smirnova}\n"
    directory = Directory.from_config(parse_config("operators:\n" + operators, {}))
    assert [t.key for t in directory.suggest("annna")] == ["anna"]
    assert [t.key for t in directory.suggest("smirnva")] == ["anna"]
    assert "op09999" in [t.key for t in directory.suggest("op0999")]


# ---- commands that do not parse -----------------------------------------------------------


def test_a_misread_shows_the_dialogs_understood_a_few_at_a_time() -> None:
    refs = tuple(DialogRef(DialogKind.CHAT, n) for n in (2043, 2044, 2045, 2046))
    session = (DialogRef(DialogKind.SESSION, 3567),)
    assert Replies.dialog_list(refs[:2] + session) == "2043, 2044, s3567"
    assert Replies.dialog_list(refs) == "2043, 2044, 2045 …"
    lines = REPLIES.misread(refs, Misread(ANNA, "<b>please</b>"), "en").splitlines()
    assert lines[0] == (
        "2043, 2044, 2045 … → Anna Smirnova: I don't understand «&lt;b&gt;please&lt;/b&gt;»."
    )
    assert lines[2] == "Example: <code>/transfer 2043 @anna</code>"


def test_finish_and_transfer_each_show_their_own_usage() -> None:
    error = UsageError("bad_dialog", "abc")
    assert REPLIES.usage("en", error, "finish").splitlines()[1:] == [
        "Usage: <code>/finish &lt;dialog&gt; [&lt;dialog&gt; …]</code>",
        "Example: <code>/finish 2043</code>",
    ]
    assert REPLIES.usage("ru", error).splitlines()[1:] == [
        "Как: <code>/transfer &lt;диалог&gt; &lt;кому&gt;</code>",
        "Пример: <code>/transfer 2043 @anna</code>",
    ]
