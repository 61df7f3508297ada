"""Button taps: pick a target, turn a page, choose a dialog, confirm, cancel.

Every tap is answered (the phone's spinner stops). A tap first claims its message in the
pending store, so a double tap — or two supervisors at once — never acts twice.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.types import CallbackQuery, Message, Update

from bot.command import DialogKind, DialogRef
from bot.directory import ResolveError
from bot.flow import Step, after_target, picker_page, picker_targets
from bot.messages import Lang
from bot.pending import Action, Expired, Pending, Taken
from bot.services import Services
from handlers import keyboards
from handlers.keyboards import (
    CancelTap,
    ConfirmTap,
    DialogTap,
    PageTap,
    RetryTap,
    TargetTap,
    tapped_kind,
)
from handlers.respond import replace
from handlers.work import Asker, carry_out, key_of


async def _claim(
    query: CallbackQuery, services: Services, lang: Lang, *actions: Action
) -> tuple[Message, Pending] | None:
    """The tapped message and its pending work, claimed; or None, the tap answered."""
    text = services.replies.messages.template
    message = query.message
    if not isinstance(message, Message):  # too old for Telegram to show us
        await query.answer(text("tap.expired", lang))
        return None
    try:
        pending = await services.pending.claim(key_of(message))
    except Expired:
        await query.answer(text("tap.expired", lang))
        return None
    except Taken:
        await query.answer(text("tap.taken", lang))
        return None
    if pending.action not in actions:
        await query.answer(text("tap.expired", lang))
        return None
    return message, pending


async def _do(
    query: CallbackQuery,
    message: Message,
    pending: Pending,
    services: Services,
    update: Update,
    *,
    lang: Lang,
    by: str,
) -> None:
    """Carry out a claimed transfer or finish and turn the message into the result."""
    await query.answer(services.replies.messages.template("tap.working", lang))
    asker = Asker.of(query, message.chat.id, update, by, lang)
    done = await carry_out(services, pending.dialogs, pending.target, asker)
    await replace(message, done.text, done.markup(services.replies, lang))
    await services.pending.drop(key_of(message))
    await services.pending.remember(key_of(message), done.refs)
    await done.offer_retry(message, services)
    await done.note_if_unannounced(message, lang, services)


async def on_target(
    query: CallbackQuery,
    callback_data: TargetTap,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """A target from the picker or from "did you mean"."""
    claimed = await _claim(query, services, lang, Action.PICK, Action.SUGGEST)
    if claimed is None:
        return
    message, pending = claimed
    target = services.directory.by_id(tapped_kind(callback_data), callback_data.id)
    plan = after_target(pending.dialogs, target)
    if plan.step is Step.CONFIRM:
        await query.answer()
        looks = await services.handoff.look(pending.dialogs)
        confirm = Pending(Action.CONFIRM_TRANSFER, pending.dialogs, pending.user_id, target=target)
        await services.pending.put(key_of(message), confirm)
        markup = keyboards.confirm("button.transfer", services.replies, lang)
        await replace(message, services.replies.confirm(looks, target, lang), markup)
        return
    pending.target = target
    await _do(query, message, pending, services, event_update, lang=lang, by=supervisor_name)


async def on_page(
    query: CallbackQuery, callback_data: PageTap, services: Services, lang: Lang
) -> None:
    """Another page of the picker (nothing is claimed: paging changes nothing)."""
    text = services.replies.messages.template
    message = query.message
    pending = await services.pending.get(key_of(message)) if isinstance(message, Message) else None
    if not isinstance(message, Message) or pending is None or pending.action is not Action.PICK:
        await query.answer(text("tap.expired", lang))
        return
    if pending.claimed:
        await query.answer(text("tap.taken", lang))
        return
    targets = picker_targets(services.directory, pending.looked)
    page = picker_page(targets, callback_data.page)
    await message.edit_reply_markup(reply_markup=keyboards.picker(page, services.replies, lang))
    await query.answer()


async def on_dialog(
    query: CallbackQuery,
    callback_data: DialogTap,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """One of several dialogs: then the typed target, or the picker."""
    claimed = await _claim(query, services, lang, Action.CHOOSE)
    if claimed is None:
        return
    message, pending = claimed
    chosen = DialogRef(DialogKind.CHAT, callback_data.chat)
    looked = tuple(d for d in pending.looked if d.chat_id == callback_data.chat)
    replies = services.replies
    if pending.target_word is None:
        await query.answer()
        await services.pending.put(
            key_of(message), Pending(Action.PICK, (chosen,), pending.user_id, looked=looked)
        )
        page = picker_page(picker_targets(services.directory, looked), 0)
        await replace(message, replies.picker(looked, lang), keyboards.picker(page, replies, lang))
        return
    try:
        target = services.directory.resolve(pending.target_word)
    except ResolveError as err:
        await query.answer()
        await services.pending.put(
            key_of(message), Pending(Action.SUGGEST, (chosen,), pending.user_id)
        )
        markup = keyboards.suggestions(err.candidates, replies, lang) if err.candidates else None
        await replace(message, replies.unresolved(err, lang), markup)
        return
    pending.dialogs, pending.target = (chosen,), target
    await _do(query, message, pending, services, event_update, lang=lang, by=supervisor_name)


async def on_confirm(
    query: CallbackQuery,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """The confirming tap of a bulk transfer or a finish."""
    claimed = await _claim(query, services, lang, Action.CONFIRM_TRANSFER, Action.CONFIRM_FINISH)
    if claimed is None:
        return
    message, pending = claimed
    await _do(query, message, pending, services, event_update, lang=lang, by=supervisor_name)


async def on_retry(
    query: CallbackQuery,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """ "Try again" under a result: the dialogs that did not move, looked at afresh and sent
    once more (at most one call each, as for a typed command)."""
    claimed = await _claim(query, services, lang, Action.RETRY)
    if claimed is None:
        return
    message, pending = claimed
    await _do(query, message, pending, services, event_update, lang=lang, by=supervisor_name)


async def on_cancel(query: CallbackQuery, services: Services, lang: Lang) -> None:
    """Cancel: the buttons go, nothing else happens."""
    claimed = await _claim(query, services, lang, *Action)
    if claimed is None:
        return
    message, _ = claimed
    await query.answer()
    await services.pending.drop(key_of(message))
    await replace(message, services.replies.messages.text("cancelled", lang))


def build_router() -> Router:
    """The button handlers."""
    router = Router(name="taps")
    router.callback_query.register(on_target, TargetTap.filter())
    router.callback_query.register(on_page, PageTap.filter())
    router.callback_query.register(on_dialog, DialogTap.filter())
    router.callback_query.register(on_confirm, ConfirmTap.filter())
    router.callback_query.register(on_cancel, CancelTap.filter())
    router.callback_query.register(on_retry, RetryTap.filter())
    return router
