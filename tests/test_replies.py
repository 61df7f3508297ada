"""Reply texts without Telegram: names, holders, truncation, splitting."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.bitrix24.client import Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import DialogKind, DialogRef, UsageError
from bot.config import parse_config
from bot.directory import BadTarget, Directory, Kind, Target
from bot.flow import Misread
from bot.handoff import Outcome, Status
from bot.messages import Messages
from bot.replies import MAX_NAME, Replies, split_message
from bot.storage import AuditEntry
from tests.harness import CONFIG_YAML, OLGA

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
    # "op0999" is one digit short of op09999, op09299, op09199…: any of them is as close
    close = [t.key for t in directory.suggest("op0999")]
    assert close and all(
        key is not None and any(key[:i] + key[i + 1 :] == "op0999" for i in range(len(key)))
        for key in close
    ), close


# ---- failures grouped ---------------------------------------------------------------------

MISSING = BitrixError("ACCESS_ERROR", "not found", 400)
NO_SUCH = (
    "No such dialog, or the bot's Bitrix24 user cannot see it. Check the number. "
    "<i>(ACCESS_ERROR)</i>"
)
NO_SUCH_RU = (
    "Такого диалога нет, или у пользователя бота в Bitrix24 нет к нему доступа. "
    "Проверьте номер. <i>(ACCESS_ERROR)</i>"
)


def chat(number: int) -> DialogRef:
    return DialogRef(DialogKind.CHAT, number)


def missing(number: int) -> Outcome:
    return Outcome(chat(number), Status.FAILED, error=MISSING)


def test_twenty_missing_dialogs_are_one_line_naming_all_twenty() -> None:
    numbers = list(range(9000, 9020))
    outcomes = [missing(n) for n in numbers]
    listed = ", ".join(map(str, numbers))
    assert REPLIES.transfer(outcomes, ANNA, "en") == f"❌ Dialogs {listed}: {NO_SUCH}"
    assert REPLIES.transfer(outcomes, None, "ru") == f"❌ Диалоги {listed}: {NO_SUCH_RU}"


def test_one_missing_dialog_reads_as_before() -> None:
    assert REPLIES.transfer([missing(9999)], ANNA, "en") == f"❌ Dialog 9999: {NO_SUCH}"
    assert REPLIES.transfer([missing(9999)], ANNA, "ru") == f"❌ Диалог 9999: {NO_SUCH_RU}"


def test_mixed_outcomes_keep_every_dialog_in_the_order_first_seen() -> None:
    refused = BitrixError("OPERATOR_WRONG", "no", 400)
    maria = Dialog(2044, "Maria", 16, 3, "telegram")
    oleg = Dialog(2046, "Oleg", 0, 3, "vk")
    outcomes = [
        Outcome(REF, Status.MOVED, dialog(16)),
        missing(9998),
        Outcome(chat(2044), Status.FAILED, maria, refused),
        Outcome(chat(2045), Status.FAILED, Dialog(2045, "Guest", 27, 3, None), refused),
        missing(9999),
        Outcome(chat(2046), Status.ALREADY, oleg),
        # other words than ACCESS_ERROR's, or the same words with another code: not grouped
        Outcome(chat(7001), Status.FAILED, error=BitrixError("INTERNAL_SERVER_ERROR")),
        Outcome(chat(7002), Status.FAILED, error=BitrixError("ERROR_UNEXPECTED_ANSWER")),
        missing(9998),  # typed twice: named once
    ]
    lines = REPLIES.transfer(outcomes, SUPPORT, "en").splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "✅ Dialog 2043 «Ivan»",
        "❌ Dialogs 9998, 9999",
        "❌ Dialogs 2044 «Maria», 2045 «Guest»",
        "☑️ Dialog 2046 «Oleg» is already waiting in Support line; nothing to do.",
        "❌ Dialog 7001",
        "❌ Dialog 7002",
    ]
    assert lines[2].endswith("<i>(OPERATOR_WRONG)</i>")
    ru = REPLIES.transfer(outcomes, SUPPORT, "ru").splitlines()
    assert [line.split(":")[0] for line in ru][:3] == [
        "✅ Диалог 2043 «Ivan»",
        "❌ Диалоги 9998, 9999",
        "❌ Диалоги 2044 «Maria», 2045 «Guest»",
    ]
    for number in (2043, 2044, 2045, 2046, 7001, 7002, 9998, 9999):
        assert str(number) in REPLIES.transfer(outcomes, SUPPORT, "ru")


def test_a_confirmation_names_each_dialog_it_cannot_see() -> None:
    refs = [chat(2043), chat(9998), chat(2044), DialogRef(DialogKind.SESSION, 77), chat(9999)]
    maria = Dialog(2044, "Maria", 15, 3, "telegram")
    looks: list[Dialog | BitrixError] = [dialog(16), MISSING, maria, MISSING, MISSING]
    assert REPLIES.confirm(refs, looks, SUPPORT, "en").splitlines() == [
        "Transfer 2 dialogs to Support line?",
        "• 2043 «Ivan» · Bob Lee",
        f"❌ Dialogs 9998, s77, 9999: {NO_SUCH}",
        "• 2044 «Maria» · Anna Smirnova",
    ]
    assert REPLIES.confirm(refs[:2], looks[:2], None, "ru").splitlines() == [
        "Завершить этот диалог? Сессия клиента будет закрыта.",
        "• 2043 «Ivan» · Bob Lee",
        f"❌ Диалог 9998: {NO_SUCH_RU}",
    ]
    assert REPLIES.look_lines([chat(9998)], [MISSING], "en") == [f"❌ Dialog 9998: {NO_SUCH}"]


# ---- /history -----------------------------------------------------------------------------

MOSCOW = ZoneInfo("Europe/Moscow")
WHEN = datetime(2026, 12, 3, 11, 5, tzinfo=UTC)


def entry(outcome: str, target: str = "user:15", action: str = "transfer") -> AuditEntry:
    return AuditEntry(WHEN, OLGA, OLGA, action, "2043", target, outcome, 120, 7)


def test_history_shows_the_team_time_with_its_zone_the_name_and_words() -> None:
    ivan = dialog(15, name="Ivan Petrov")
    assert REPLIES.audit_line(entry("ok"), "Olga", "en", MOSCOW, ivan) == (
        "03.12 14:05 MSK · 2043 «Ivan Petrov» → Anna Smirnova · moved · Olga"
    )
    assert REPLIES.audit_line(entry("ok", "queue:3"), "Olga", "ru", MOSCOW, ivan) == (
        "03.12 14:05 MSK · 2043 «Ivan Petrov» → Support line · передан · Olga"
    )
    # no look (it failed): the number alone; no zone given: UTC, named
    assert REPLIES.audit_line(entry("ok", "-", "finish"), None, "en") == (
        f"03.12 11:05 UTC · 2043 · finished · {OLGA}"
    )


@pytest.mark.parametrize(
    ("outcome", "action", "en", "ru"),
    [
        ("ok", "finish", "finished", "завершён"),
        ("NOT_MOVED", "transfer", "did not move", "не перешёл"),
        ("NOT_MOVED", "finish", "did not finish", "не завершился"),
        ("already", "transfer", "was there already", "уже был там"),
        ("closed", "finish", "was finished already", "уже был завершён"),
        ("ACCESS_ERROR", "transfer", "no such dialog", "нет такого диалога"),
        ("STALE", "transfer", "not done: too old", "не выполнено: устарело"),
        ("CUT_OFF", "tap", "cut off by a restart", "прервано перезапуском"),
        ("DUPLICATE", "transfer", "delivered twice, ignored", "пришло повторно, пропущено"),
        ("SOMETHING_NEW", "transfer", "error SOMETHING_NEW", "ошибка SOMETHING_NEW"),
    ],
)
def test_history_outcomes_are_words(outcome: str, action: str, en: str, ru: str) -> None:
    line = entry(outcome, "user:15" if action == "transfer" else "-", action)
    assert REPLIES.audit_line(line, "Olga", "en").split(" · ")[-2] == en
    assert REPLIES.audit_line(line, "Olga", "ru").split(" · ")[-2] == ru


def test_history_usage_says_what_was_wrong() -> None:
    assert REPLIES.history_usage("en", "many").splitlines() == [
        "One dialog or one name at a time.",
        "Whose history? Example: <code>/history 2043</code> or <code>/history @anna</code>",
    ]
    assert REPLIES.history_usage("ru", "many").splitlines()[0] == (
        "Только один диалог или одно имя за раз."
    )
    with pytest.raises(BadTarget) as bad:
        DIRECTORY.resolve("user:abc")
    assert REPLIES.history_usage("en", bad.value).splitlines() == [
        "«user:abc» is not a name (use @name, #queue, user:15 or queue:3).",
        "Whose history? Example: <code>/history 2043</code> or <code>/history @anna</code>",
    ]


def test_one_dialog_to_confirm_is_not_one_dialogs() -> None:
    refs = [chat(2043), chat(9998), chat(9999)]
    looks: list[Dialog | BitrixError] = [dialog(16), MISSING, MISSING]
    assert REPLIES.confirm(refs, looks, ANNA, "en").splitlines()[0] == (
        "Transfer this dialog to Anna Smirnova?"
    )
    assert REPLIES.confirm(refs, looks, ANNA, "ru").splitlines()[0] == (
        "Передать этот диалог оператору Anna Smirnova?"
    )


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
        "Формат: <code>/transfer &lt;диалог&gt; &lt;кому&gt;</code>",
        "Пример: <code>/transfer 2043 @anna</code>",
    ]
