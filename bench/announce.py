"""Announce: 200 handoffs at once, announced to a team chat under Telegram's flood limits.

The real bot, with ``announce_to`` set to a group, polls a FakeTelegram that enforces
Telegram's flood limits (``TelegramLimits()``: 30 messages a second overall, one a second per
chat after a burst of 3, 20 a minute per group; past them, 429 with ``retry_after``). Ten
supervisors send 200 ``/transfer`` commands for 200 distinct dialogs, all injected at once.
The run ends when every command has been handled (each handler waits for its announcement to
be posted) or after a bounded time.

Reported: messages the group got (distinct message IDs) and edits, 429s received (for the
group and for private replies), and ``lost``: handoffs whose dialog number is in none of the
group's messages as they read at the end.

    python bench/announce.py [--quick]
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import Counter
from typing import Any

from bot.sandbox.telegram import ApiCall, TelegramLimits

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/announce.py
    import _stack  # type: ignore[no-redef]

KEY = "announce"
FIRST_DIALOG = 50_001  # five digits, so a number in a text is surely a dialog
SUPERVISORS = tuple(range(7_200_001, 7_200_011))
GROUP = _stack.TEAM_CHAT
DEADLINE_S = 170.0
QUICK_DEADLINE_S = 60.0
_DIALOG_NUMBER = re.compile(r"\b\d{5}\b")


class Refusals:
    """429s the fake gave, by where the message was going (an ``on_call`` hook)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()

    def __call__(self, call: ApiCall) -> None:
        if call.status != 429:
            return
        try:
            chat_id = int(call.params.get("chat_id") or 0)
        except (TypeError, ValueError):
            chat_id = 0
        kind = "group" if chat_id < 0 else "private" if chat_id > 0 else "other"
        self.by_kind[f"{kind} {call.method}"] += 1

    def total(self, kind: str) -> int:
        return sum(n for key, n in self.by_kind.items() if key.startswith(kind + " "))


async def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the figures (the ``announce`` entry of results.json)."""
    handoffs = 30 if quick else 200
    deadline_s = QUICK_DEADLINE_S if quick else DEADLINE_S
    dialogs = list(range(FIRST_DIALOG, FIRST_DIALOG + handoffs))
    portal = _stack.make_portal(_stack.guest_dialogs(FIRST_DIALOG, handoffs))
    yaml_text = _stack.config_yaml(
        supervisors=[(s, f"Sup{i}") for i, s in enumerate(SUPERVISORS)],
        chats=[(GROUP, "Support leads")],
        announce_to=GROUP,
    )
    refusals = Refusals()
    with _stack.LogTally() as tally:
        async with _stack.running_stack(yaml_text, portal=portal, limits=TelegramLimits()) as stack:
            tg = stack.telegram
            tg.on_call = refusals
            started = time.perf_counter()
            for n, dialog in enumerate(dialogs):
                target = "@anna" if n % 2 == 0 else "@bob"
                tg.send_message(
                    f"/transfer {dialog} {target}",
                    user_id=SUPERVISORS[n % len(SUPERVISORS)],
                    first_name=f"Sup{n % len(SUPERVISORS)}",
                )

            def replies() -> int:
                return sum(
                    1 for m in tg.sent if m.method == "sendMessage" and m.chat_id in SUPERVISORS
                )

            loop = asyncio.get_running_loop()
            ends = loop.time() + deadline_s
            all_replied_at: float | None = None
            settled = False
            while loop.time() < ends:
                if all_replied_at is None and replies() >= handoffs:
                    all_replied_at = time.perf_counter() - started
                if tg.pending_updates == 0 and await stack.app.inbox.wait_idle(
                    max(0.1, min(5.0, ends - loop.time()))
                ):
                    # idle twice, a moment apart: nothing was between two polls
                    await asyncio.sleep(0.3)
                    if tg.pending_updates == 0 and await stack.app.inbox.wait_idle(0.01):
                        settled = True
                        break
                else:
                    await asyncio.sleep(0.2)
            seconds = time.perf_counter() - started
            if all_replied_at is None and replies() >= handoffs:
                all_replied_at = seconds

            group_ids = sorted({m.message_id for m in tg.messages_to(GROUP)})
            finals = [(tg.get_message(GROUP, i) or {}).get("text", "") for i in group_ids]
            mentions = Counter(int(x) for text in finals for x in _DIALOG_NUMBER.findall(text))
            moved = [d for d in dialogs if portal.dialogs[d].owner in (_stack.ANNA, _stack.BOB)]
            ok_replies = sum(
                1
                for m in tg.sent
                if m.method == "sendMessage"
                and m.chat_id in SUPERVISORS
                and m.plain_text.startswith("✅")
            )
            figures: dict[str, Any] = {
                "handoffs": handoffs,
                "messages_sent": len(group_ids),
                "edits": sum(1 for m in tg.messages_to(GROUP) if m.method == "editMessageText"),
                "telegram_429": tg.flood_refusals,
                "lost": sum(1 for d in dialogs if d not in mentions),
                "seconds": round(seconds, 1),
                "telegram_429_group": refusals.total("group"),
                "telegram_429_private": refusals.total("private"),
                "telegram_429_by_method": dict(refusals.by_kind),
                "mentioned_twice": sum(1 for d in dialogs if mentions[d] > 1),
                "moved": len(moved),
                "lost_of_moved": sum(1 for d in moved if d not in mentions),
                "replies": replies(),
                "replies_ok": ok_replies,
                "all_replied_s": None if all_replied_at is None else round(all_replied_at, 1),
                "settled": settled,
                "bot_messages_total": tg.messages_sent,
                "bot_edits_total": tg.edits,
                "group_message_lengths": [len(t) for t in finals],
                "warnings": dict(tally.counts),
                "supervisors": len(SUPERVISORS),
            }
    _print(figures, tally)
    return figures


def _print(f: dict[str, Any], tally: _stack.LogTally) -> None:
    print(
        f"announce: {f['handoffs']} handoffs from {f['supervisors']} supervisors at once, "
        "Telegram flood limits on"
    )
    print(
        f"  team chat           {f['messages_sent']} messages, {f['edits']} edits "
        f"(lengths {f['group_message_lengths']})"
    )
    print(
        f"  handoffs            moved {f['moved']}/{f['handoffs']}, lost {f['lost']} "
        f"(of the moved: {f['lost_of_moved']}), mentioned twice {f['mentioned_twice']}"
    )
    print(
        f"  replies             {f['replies']}/{f['handoffs']} ({f['replies_ok']} with ✅), "
        f"all in after {f['all_replied_s']} s"
    )
    print(
        f"  429s from Telegram  {f['telegram_429']} (group {f['telegram_429_group']}, "
        f"private {f['telegram_429_private']}) {f['telegram_429_by_method'] or ''}"
    )
    print(
        f"  settled             {'yes' if f['settled'] else 'NO (deadline)'} after "
        f"{f['seconds']} s; bot sent {f['bot_messages_total']} messages, "
        f"{f['bot_edits_total']} edits in all"
    )
    for line in tally.lines(8):
        print(f"    {line}")
    print(
        f"announce: {f['handoffs']} handoffs -> {f['messages_sent']} group messages + "
        f"{f['edits']} edits, {f['telegram_429']} x 429, lost {f['lost']}, "
        f"{f['replies']}/{f['handoffs']} replies [{f['seconds']} s]"
    )


def main(argv: list[str] | None = None) -> None:
    """``python bench/announce.py [--quick] [--json]``."""
    _stack.cli(run, KEY, __doc__ or KEY, "30 handoffs instead of 200", argv)


if __name__ == "__main__":
    sys.exit(main())
