"""Dialogs that fail alike share one line, end to end: in a confirmation, in a result, before
a picker, for /finish; every dialog a command named is in the reply by its number."""

from __future__ import annotations

from handlers.keyboards import ConfirmTap, TargetTap
from tests.conftest import ANNA, SUPPORT
from tests.harness import running_bot

OK = ConfirmTap().pack()

NO_SUCH = (
    "No such dialog, or the bot's Bitrix24 user cannot see it. Check the number. (ACCESS_ERROR)"
)
NO_SUCH_RU = (
    "Такого диалога нет, или у пользователя бота в Bitrix24 нет к нему доступа. "
    "Проверьте номер. (ACCESS_ERROR)"
)


async def test_a_confirmation_names_the_missing_dialogs_on_one_line() -> None:
    async with running_bot() as h:
        confirm = await h.say("/transfer 2043 2044 9998 9999 #sup")
        assert confirm.plain_text.splitlines() == [
            "Transfer 2 dialogs to Support line?",
            "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
            "• 2044 «Maria — Telegram» · Anna Smirnova",
            f"❌ Dialogs 9998, 9999: {NO_SUCH}",
        ]
        assert h.rest_calls() == [], "nothing moves before the tap"
        await h.tap(confirm, OK)
        assert h.now(confirm).plain_text.splitlines() == [
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Support line",
            "✅ Dialog 2044 «Maria — Telegram»: Anna Smirnova → Support line",
            f"❌ Dialogs 9998, 9999: {NO_SUCH}",
        ]
        assert h.rest_calls() == [
            {"CHAT_ID": 2043, "QUEUE_ID": SUPPORT},
            {"CHAT_ID": 2044, "QUEUE_ID": SUPPORT},
        ]
        assert h.team_chat_now()[0].count("🔁") == 2, "the announcement is as it was"


async def test_a_russian_supervisor_reads_the_same_in_russian() -> None:
    async with running_bot() as h:
        confirm = await h.say("/transfer 2043 2044 9998 9999 #sup", language="ru")
        assert confirm.plain_text.splitlines() == [
            "Передать диалоги (2) в очередь «Support line»?",
            "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
            "• 2044 «Maria — Telegram» · Anna Smirnova",
            f"❌ Диалоги 9998, 9999: {NO_SUCH_RU}",
        ]
        reply = await h.say("/transfer 9997 9998 9999 @anna", language="ru")
        assert reply.plain_text == f"❌ Диалоги 9997, 9998, 9999: {NO_SUCH_RU}"


async def test_twenty_missing_dialogs_are_one_line() -> None:
    async with running_bot() as h:
        numbers = " ".join(str(n) for n in range(9000, 9020))
        reply = await h.say(f"/transfer {numbers} @anna")
        assert reply.plain_text == f"❌ Dialogs {numbers.replace(' ', ', ')}: {NO_SUCH}"
        assert h.rest_calls() == []


async def test_the_failures_before_a_picker_are_grouped() -> None:
    async with running_bot() as h:
        picker = await h.say("/transfer 9998 2043 9999")
        assert picker.plain_text.splitlines() == [
            f"❌ Dialogs 9998, 9999: {NO_SUCH}",
            "Dialog 2043 «Ivan Petrov — WhatsApp» is with Bob Lee. Move it to:",
        ]
        await h.tap(picker, TargetTap(kind="o", id=ANNA).pack())
        # three dialogs were named: a confirming tap, for the one that can move
        assert h.now(picker).plain_text.splitlines() == [
            "Transfer this dialog to Anna Smirnova?",
            f"❌ Dialogs 9998, 9999: {NO_SUCH}",
            "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
        ]
        assert h.rest_calls() == []
        await h.tap(h.now(picker), OK)
        # the result still says what became of the dialogs it could not see
        assert h.now(picker).plain_text.splitlines() == [
            f"❌ Dialogs 9998, 9999: {NO_SUCH}",
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova",
        ]
        assert h.rest_calls() == [{"CHAT_ID": 2043, "USER_ID": ANNA}]


async def test_finish_names_the_missing_dialogs_on_one_line() -> None:
    async with running_bot() as h:
        confirm = await h.say("/finish 2043 9998 9999", language="ru")
        assert confirm.plain_text.splitlines() == [
            "Завершить этот диалог? Сессия клиента будет закрыта.",
            "• 2043 «Ivan Petrov — WhatsApp» · Bob Lee",
            f"❌ Диалоги 9998, 9999: {NO_SUCH_RU}",
        ]
        nothing = await h.say("/finish 9998 9999")
        assert nothing.plain_text == f"❌ Dialogs 9998, 9999: {NO_SUCH}"
        assert h.portal.calls_to("imopenlines.operator.another.finish") == []
