"""/transfer: parse, then carry out the plan — usage, a choice, the picker, a confirmation,
"did you mean", the people a name fits, or the transfer itself (after one question when its
operator is offline)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import InlineKeyboardMarkup, Message, Update

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, DialogRef, UsageError, parse_transfer
from bot.directory import ResolveError, Target
from bot.flow import (
    Misread,
    Plan,
    Step,
    offline_first,
    picker_page,
    picker_targets,
    plan_transfer,
)
from bot.handoff import Looks
from bot.messages import Html, Lang
from bot.pending import Action, Pending
from bot.presence import Online
from bot.services import Services
from handlers import keyboards
from handlers.respond import respond
from handlers.work import (
    Asker,
    carry_out,
    chat_refs,
    failures,
    fitting,
    key_of,
    replied_dialogs,
)


async def transfer(
    message: Message,
    command: CommandObject,
    bot: Bot,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """``/transfer <dialog> [<dialog> ...] [<target>]``, or a reply to a message about one."""
    replies = services.replies
    try:
        parsed = parse_transfer(command.args, DialogKind(services.config.dialog_numbers))
    except UsageError as err:
        await respond(message, replies.usage(lang, err))
        return
    plan = plan_transfer(parsed, await replied_dialogs(message, bot, services), services.directory)
    user_id = message.from_user.id if message.from_user else 0

    if plan.step is Step.USAGE:
        assert plan.error is not None
        if isinstance(plan.error, UsageError):
            await respond(message, replies.usage(lang, plan.error))
        elif isinstance(plan.error, Misread):
            await respond(message, replies.misread(plan.dialogs, plan.error, lang))
        else:
            await respond(message, replies.unresolved(plan.error, lang))
        return
    if plan.step is Step.SUGGEST:
        assert isinstance(plan.error, ResolveError)
        action, offered, markup = await fitting(plan.error, services, lang)
        suggest = Pending(action, plan.dialogs, user_id, offered=offered)
        async with services.pending.unstored.sending(message.chat.id):
            sent = await respond(message, replies.unresolved(plan.error, lang), markup)
            await services.pending.put(key_of(sent[-1]), suggest)
        return
    if plan.step is Step.EXECUTE:
        assert plan.target is not None
        looks, online = await _looked_with_presence(services, plan.dialogs, plan.target)
        if offline_first(plan.target, looks.items, online):
            text = replies.offline(plan.dialogs, looks.items, plan.target, lang)
            confirm = Action.CONFIRM_TRANSFER
            await _ask_with(message, plan, services, lang, confirm, text, looks)
            return
        asker = Asker.of(message, message.chat.id, event_update, supervisor_name, lang)
        done = await carry_out(services, plan.dialogs, plan.target, asker, looks)
        async with services.pending.unstored.sending(message.chat.id):
            sent = await respond(message, done.text, done.markup(replies, lang))
            for sent_message in sent:
                await services.pending.remember(key_of(sent_message), done.refs)
            await done.offer_retry(sent[-1], services)
        await done.note_if_unannounced(sent[-1], lang, services)
        return
    await _ask(message, plan, services, lang)


async def _looked_with_presence(
    services: Services, dialogs: Sequence[DialogRef], target: Target
) -> tuple[Looks, Online]:
    """Where the dialogs are, and whether the operator is online (offline: ask first); when
    the portal must be asked both, together: one round trip."""
    known = services.presence.all_known([target])
    if known is not None:  # seen within the minute: no tasks to run the two side by side
        return await services.handoff.looked(dialogs), known
    looks, online = await asyncio.gather(
        services.handoff.looked(dialogs), services.presence.of([target])
    )
    return looks, online


async def _ask(message: Message, plan: Plan, services: Services, lang: Lang) -> None:
    """The steps that look at the dialogs first, then ask with buttons."""
    replies = services.replies
    looks = await services.handoff.looked(plan.dialogs)
    seen = [look for look in looks.items if isinstance(look, Dialog)]
    failed = replies.transfer(failures(plan.dialogs, looks.items), None, lang)
    if not seen:
        await respond(message, failed)
        return
    markup: InlineKeyboardMarkup
    offered: tuple[Target, ...] = ()  # what a target button may choose: the picker's
    if plan.step is Step.CONFIRM:
        assert plan.target is not None
        text = replies.confirm(plan.dialogs, looks.items, plan.target, lang)
        online = await services.presence.of([plan.target])
        if offline_first(plan.target, looks.items, online):  # said in the one question asked
            text = Html(f"{replies.offline_note(plan.target, lang)}\n{text}")
        await _ask_with(message, plan, services, lang, Action.CONFIRM_TRANSFER, text, looks)
        return
    if plan.step is Step.CHOOSE:
        text = Html("\n".join(filter(None, [failed, replies.messages.text("choose", lang)])))
        markup = keyboards.dialogs(seen, replies, lang)
        action = Action.CHOOSE
    else:
        text = Html("\n".join(filter(None, [failed, replies.picker(seen, lang)])))
        offered = tuple(picker_targets(services.directory, seen))
        page = picker_page(offered, 0)
        online = await services.presence.of(page.targets)
        markup = keyboards.picker(page, replies, lang, online)
        action = Action.PICK
    await _ask_with(message, plan, services, lang, action, text, looks, markup, offered)


async def _ask_with(
    message: Message,
    plan: Plan,
    services: Services,
    lang: Lang,
    action: Action,
    text: Html,
    looks: Looks,
    markup: InlineKeyboardMarkup | None = None,
    offered: tuple[Target, ...] = (),
) -> None:
    """Send the question (a confirmation unless ``markup`` says otherwise) and keep what its
    buttons would do."""
    markup = markup or keyboards.confirm("button.transfer", services.replies, lang)
    seen = tuple(look for look in looks.items if isinstance(look, Dialog))
    user_id = message.from_user.id if message.from_user else 0
    # a choice is between dialogs that exist; otherwise keep every dialog, so the result
    # still says what became of the ones that could not be seen
    pending = Pending(
        action,
        chat_refs(seen) if action is Action.CHOOSE else plan.dialogs,
        user_id,
        target=plan.target,
        looked=seen,
        target_word=plan.target_word,
        offered=offered,
    )
    async with services.pending.unstored.sending(message.chat.id):
        sent = await respond(message, text, markup)
        key = key_of(sent[-1])
        await services.pending.put(key, pending)
        await services.pending.remember(key, pending.dialogs)


def build_router() -> Router:
    """The /transfer command."""
    router = Router(name="transfer")
    router.message.register(transfer, Command("transfer", ignore_case=True))
    return router
