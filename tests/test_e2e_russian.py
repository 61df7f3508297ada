"""Russian replies read aloud right: names are never declined, a noun carries the case."""

from __future__ import annotations

from handlers.keyboards import ConfirmTap
from tests.harness import running_bot

FINISH = "imopenlines.operator.another.finish"


async def test_where_a_dialog_waits_is_said_with_the_queue_in_quotes() -> None:
    async with running_bot() as h:
        picker = await h.say("/transfer 2046", language="ru")
        assert picker.plain_text == (
            "Диалог 2046 «Oleg — VK» сейчас в очереди «Support line». Кому передать?"
        )
        held = await h.say("/transfer 2043", language="ru")
        assert held.plain_text == (
            "Диалог 2043 «Ivan Petrov — WhatsApp» сейчас у оператора Bob Lee. Кому передать?"
        )


async def test_a_bulk_confirmation_names_the_kind_of_target() -> None:
    async with running_bot() as h:
        to_queue = await h.say("/transfer 2043 2044 2045 #sales", language="ru")
        assert to_queue.plain_text.splitlines()[0] == (
            "Передать диалоги (3) в очередь «Sales <line>»?"
        )
        to_anna = await h.say("/transfer 2043 2044 2045 @anna", language="ru")
        assert to_anna.plain_text.splitlines()[0] == (
            "Передать диалоги (3) оператору Anna Smirnova?"
        )
        to_raw = await h.say("/transfer 2043 2044 2045 user:99", language="ru")
        assert to_raw.plain_text.splitlines()[0] == "Передать диалоги (3) оператору user:99?"
        assert h.rest_calls() == [], "nothing moves before the confirming tap"


async def test_finished_and_already_there_read_right() -> None:
    async with running_bot() as h:
        already = await h.say("/transfer 2044 @anna", language="ru")
        assert already.plain_text == (
            "☑️ Диалог 2044 «Maria — Telegram» уже у этого оператора (Anna Smirnova), "
            "ничего не делаю."
        )
        ask = await h.say("/finish 2046", language="ru")
        await h.tap(ask, ConfirmTap().pack(), language="ru")
        assert h.now(ask).plain_text == (
            "🏁 Диалог 2046 «Oleg — VK» завершён (был в очереди «Support line»)."
        )
        assert len(h.rest_calls(FINISH)) == 1
        assert h.team_chat() == [
            "🏁 Диалог 2046 «Oleg — VK» завершил(а) Olga (был в очереди «Support line»)"
        ]
