"""✅ means seen on the portal: the real bot against a portal that answers as Bitrix24 does.

The portal answers ``result: true`` to transfers it then drops, keeps a dialog's first line in
``entity_id``, redirects when it moved, answers late. Each test counts the transfer calls
that went out: one per dialog per command, whatever the portal does.
"""

from __future__ import annotations

import asyncio

from bot.sandbox.portal import Fault, PortalSimulator, SimOperator
from tests.conftest import ANNA, BOB, SALES, SUPPORT, WEBHOOK_CODE, make_portal
from tests.harness import CONFIG_YAML, running_bot, with_supervisors

TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"
RETRY = "re"
KATE = 29  # an extranet user: the portal drops transfers to her without a word

WITH_KATE = CONFIG_YAML.replace(
    "queues:\n", "  - {key: kate, bitrix_id: 29, name: Kate Roy}\nqueues:\n", 1
)


def with_kate() -> PortalSimulator:
    """The test portal, plus Kate: in the bot's directory, an extranet user on the portal."""
    portal = make_portal()
    portal.operators[KATE] = SimOperator(KATE, "Kate Roy", kind="extranet")
    return portal


async def test_a_silent_drop_is_reported_as_not_moved_and_not_announced() -> None:
    async with running_bot(with_kate(), yaml_text=WITH_KATE) as h:
        reply = await h.say("/transfer 2043 @kate")
        await h.settle()
        assert reply.plain_text == (
            "❌ Bitrix24 accepted the transfer, but dialog 2043 «Ivan Petrov — WhatsApp» is "
            "still with Bob Lee. Kate Roy may be an extranet user or a bot, or the dialog was "
            "being moved already."
        )
        assert len(h.rest_calls()) == 1
        assert h.team_chat() == [], "nothing happened: nothing is announced"
        [entry] = await h.app.services.storage.history(dialog="2043")
        assert entry.outcome == "NOT_MOVED"
        assert h.labels(reply) == ["🔁 Try again"]


async def test_try_again_sends_once_more_and_reports_the_truth() -> None:
    portal = make_portal()
    portal.dialogs[2043].locked = True  # another transfer holds the dialog: this one is dropped
    async with running_bot(portal) as h:
        reply = await h.say("/transfer 2043 @anna")
        assert reply.plain_text.startswith("❌ Bitrix24 accepted the transfer, but dialog 2043")
        portal.dialogs[2043].locked = False
        await h.tap(reply, RETRY)
        assert h.now(reply).plain_text == (
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova"
        )
        assert h.labels(reply) == []
        await h.tap(reply, RETRY, check_button=False)  # a second tap on the gone button
        assert len(h.rest_calls()) == 2, "one call for the command, one for the tap"
        assert portal.moves == [(2043, "user", ANNA)]
        await h.settle()
        assert h.team_chat() == [
            "🔁 Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova, by Olga"
        ]


async def test_a_queue_the_portal_does_not_have_is_not_moved() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 queue:99")
        assert reply.plain_text == (
            "❌ Bitrix24 accepted the transfer, but dialog 2043 «Ivan Petrov — WhatsApp» is "
            "still with Bob Lee. The portal may have no line queue:99 (check its ID), or the "
            "dialog was being moved already."
        )
        assert h.rest_calls() == [{"CHAT_ID": 2043, "QUEUE_ID": 99}]


async def test_a_move_between_lines_and_back() -> None:
    async with running_bot() as h:
        there = await h.say("/transfer 2043 #sales")
        assert there.plain_text == "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Sales <line>"
        # entity_id still names Support, the line the chat was created in
        assert h.portal.dialogs[2043].entity_id.split("|")[1] == str(SUPPORT)
        again = await h.say("/transfer 2043 #sales")
        assert again.plain_text == (
            "☑️ Dialog 2043 «Ivan Petrov — WhatsApp» is already waiting in Sales <line>; "
            "nothing to do."
        )
        back = await h.say("/transfer 2043 #support")
        assert back.plain_text == (
            "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Sales <line> → Support line"
        )
        picker = await h.say("/transfer 2043")
        assert picker.plain_text.startswith(
            "Dialog 2043 «Ivan Petrov — WhatsApp» is waiting in Support line."
        )
        assert "# Support line" not in h.labels(picker), "its own line is not offered"
        assert "# Sales <line>" in h.labels(picker)
        assert h.rest_calls() == [
            {"CHAT_ID": 2043, "QUEUE_ID": SALES},
            {"CHAT_ID": 2043, "QUEUE_ID": SUPPORT},
        ]
        assert h.portal.dialogs[2043].system_messages == []


async def test_a_finished_dialog_is_said_so_and_not_transferred() -> None:
    portal = make_portal()
    portal.dialogs[2043].closed = True
    async with running_bot(portal) as h:
        reply = await h.say("/transfer 2043 @anna")
        assert reply.plain_text == (
            "🏁 Dialog 2043 «Ivan Petrov — WhatsApp» is finished; there is nothing to transfer."
        )
        assert h.rest_calls() == []
        confirm = await h.say("/finish 2043")
        await h.tap(confirm, "ok")
        assert h.now(confirm).plain_text == (
            "☑️ Dialog 2043 «Ivan Petrov — WhatsApp» is finished already; nothing to do."
        )
        assert h.rest_calls("imopenlines.operator.another.finish") == []


async def test_a_finish_is_verified() -> None:
    async with running_bot() as h:
        confirm = await h.say("/finish 2044")
        await h.tap(confirm, "ok")
        assert h.now(confirm).plain_text.startswith("🏁 Dialog 2044 «Maria — Telegram» finished")
        assert h.portal.dialogs[2044].closed
        calls = [c.method for c in h.portal.calls if c.in_batch]
        assert calls[-2:] == ["imopenlines.operator.another.finish", DIALOG_GET]


async def test_a_moved_portal_is_named_and_not_followed() -> None:
    portal = make_portal()
    async with make_portal() as new_home, running_bot(portal) as h:
        portal.move_to(new_home.base_url)
        reply = await h.say("/transfer 2043 @anna")
        assert reply.plain_text == (
            "❌ Dialog 2043: The Bitrix24 portal has moved to a new address: the bot's settings "
            "must be updated. Tell @it_ops. (PORTAL_MOVED)"
        )
        assert new_home.calls == []
        assert WEBHOOK_CODE not in reply.text


async def test_a_500_keeps_its_code_and_the_hammer_is_one_call() -> None:
    portal = make_portal()
    portal.inject("batch", Fault.error("INTERNAL_SERVER_ERROR"), times=1000, carrying=TRANSFER)
    async with running_bot(portal, env={"DEADLINE_S": "15"}) as h:
        reply = await h.say("/transfer 2043 @anna", wait_s=30)
        assert reply.plain_text == (
            "❌ Dialog 2043 «Ivan Petrov — WhatsApp» is still with Bob Lee: Bitrix24 had an "
            "internal error. Try again in a minute; if it repeats, tell @it_ops. "
            "(INTERNAL_SERVER_ERROR)"
        )
        assert len(portal.requests_carrying(TRANSFER)) == 1, "one transfer call in all"
        assert h.labels(reply) == ["🔁 Try again"]


async def test_proxy_pages_never_make_a_second_transfer() -> None:
    portal = make_portal()
    portal.inject("batch", Fault.proxy_page(502), times=1000, carrying=TRANSFER)
    async with running_bot(portal, env={"DEADLINE_S": "15"}) as h:
        reply = await h.say("/transfer 2043 #sales", wait_s=30)
        assert "is still with Bob Lee: Bitrix24's answer was lost" in reply.plain_text
        assert len(portal.requests_carrying(TRANSFER)) == 1
        assert portal.moves == []


async def test_a_late_apply_is_reported_as_it_is_and_never_doubled() -> None:
    portal = make_portal()
    # the portal moves the dialog 2.5 s after the request, long after the bot gave up
    portal.inject("batch", Fault.late(apply_after_s=2.5, answer_after_s=8), carrying=TRANSFER)
    env = {"TIMEOUT_S": "0.5", "DEADLINE_S": "2"}
    async with running_bot(portal, env=env) as h:
        reply = await h.say("/transfer 2043 #sales")
        assert reply.plain_text.startswith(
            "❌ Dialog 2043 «Ivan Petrov — WhatsApp» is still with Bob Lee: Bitrix24's answer "
            "was lost, and it may still carry the request out late."
        )
        await asyncio.sleep(2.5)
        assert portal.moves == [(2043, "queue", SALES)], "it landed late, once"
        assert len(portal.requests_carrying(TRANSFER)) == 1


async def test_a_late_apply_seen_by_the_look_is_a_success() -> None:
    portal = make_portal()
    portal.inject("batch", Fault.late(apply_after_s=0.7, answer_after_s=8), carrying=TRANSFER)
    async with running_bot(portal, env={"TIMEOUT_S": "0.5", "DEADLINE_S": "4"}) as h:
        reply = await h.say("/transfer 2043 @anna")
        assert (
            reply.plain_text == "✅ Dialog 2043 «Ivan Petrov — WhatsApp»: Bob Lee → Anna Smirnova"
        )
        assert portal.moves == [(2043, "user", ANNA)]
        assert len(portal.requests_carrying(TRANSFER)) == 1


async def test_time_waiting_for_the_bucket_is_not_counted_against_the_deadline() -> None:
    # one request per half second and no batching: the last of six commands waits ~5 s for
    # the bucket, five times its deadline, and still gets its answer
    yaml_text = with_supervisors(6).replace("  burst:", "  batch_calls: false\n  burst:", 1)
    portal = make_portal(leak_per_s=2.0, burst=1)
    env = {"RATE": "2", "BURST": "1", "DEADLINE_S": "1"}
    async with running_bot(portal, env=env, yaml_text=yaml_text) as h:
        for i in range(6):
            h.telegram.send_message(f"/transfer {2043 + i % 2} #sales", user_id=7000 + i)
        chats = [7000 + i for i in range(6)]
        await h.telegram.wait_for(lambda: all(h.messages_in(c) for c in chats), timeout=30)
        texts = [h.telegram.messages_to(c)[0].plain_text for c in chats]
        assert all(t.startswith(("✅", "☑️")) for t in texts), texts
        assert portal.rejected_by_limit == 0
        assert sorted(c["CHAT_ID"] for c in h.rest_calls()) == [2043, 2044]


async def test_no_second_transfer_to_whoever_holds_it_already() -> None:
    async with running_bot() as h:
        reply = await h.say("/transfer 2043 @bob")
        assert reply.plain_text.startswith("☑️ Dialog 2043")
        assert h.rest_calls() == []
        assert h.portal.dialogs[2043].system_messages == [], "the customer saw no notice"
        assert h.portal.dialogs[2043].owner == BOB
