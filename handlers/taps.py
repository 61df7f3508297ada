"""Button taps: pick a target, turn a page, choose a dialog, confirm, cancel.

Every tap is answered exactly once, and first — before any edit or REST call — so the phone's
spinner stops whatever happens after: :class:`AnswerEveryTap` hands each handler a
:class:`TapAnswer` and answers for the handler that did not; a handler that fails leaves the
error handler a :class:`TapFailed` that knows whether the tap was answered.

A tap is checked against what its message offered before it claims the message in the
pending store (callback data comes from the user's phone and may be anything), then claims
it, so a stale or crafted tap spends nothing and a double tap — or two supervisors at once —
never acts twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiogram import BaseMiddleware, Router
from aiogram.dispatcher.event.bases import CancelHandler, SkipHandler
from aiogram.types import CallbackQuery, Message, TelegramObject, Update

from bot.command import DialogKind, DialogRef
from bot.directory import ResolveError, Target
from bot.flow import Step, after_target, offline_first, picker_page, picker_targets
from bot.inbox import Handler
from bot.messages import Html, Lang
from bot.pending import Action, Expired, NotOffered, Pending, Refused, Taken
from bot.services import Services
from handlers import keyboards
from handlers.keyboards import (
    CancelTap,
    ConfirmTap,
    DialogTap,
    Exact,
    PageTap,
    RetryTap,
    TargetTap,
    tapped_kind,
)
from handlers.respond import replace
from handlers.work import Asker, carry_out, edited, fitting, key_of

log = logging.getLogger(__name__)

# what a refused tap is told; nothing was changed and no claim was spent
_REFUSALS: dict[type[Refused], str] = {
    Expired: "tap.expired",
    Taken: "tap.taken",
    NotOffered: "tap.not_valid",
}


class TapAnswer:
    """The one answer a tap gets: Telegram takes a single answer per callback query, so the
    first call sends it and later calls do nothing."""

    def __init__(self, query: CallbackQuery) -> None:
        self.query = query
        self.sent = False

    async def __call__(self, text: str | None = None, *, alert: bool = False) -> None:
        """Answer the tap (a toast, or an alert) unless it was answered already."""
        if self.sent:
            return
        self.sent = True  # before the request: an answer lost on the way is not sent twice
        await self.query.answer(text, show_alert=alert)


class TapFailed(Exception):
    """A tap's handler failed (the failure is the ``__cause__``); ``answer`` tells the error
    handler whether the tap was answered before it did, and answers it if not."""

    def __init__(self, answer: TapAnswer) -> None:
        super().__init__(f"tap {answer.query.id} failed")
        self.answer = answer


class AnswerEveryTap(BaseMiddleware):
    """Puts a :class:`TapAnswer` into each tap handler's data as ``answer``; answers plainly
    for a handler that returned without answering; turns a handler's failure into
    :class:`TapFailed`.

    Not aiogram's ``CallbackAnswerMiddleware``: that one answers either before the handler
    with one fixed text or after it, while here the answer depends on the tap's check and must
    come before the REST work ("Working…"); and on a failure it answers in ``finally`` with the
    ordinary text, so the error handler could neither alert nor know.
    """

    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Run the handler with its answer at hand; make sure the tap is answered."""
        if not isinstance(event, CallbackQuery):
            return await handler(event, data)
        answer = data["answer"] = TapAnswer(event)
        try:
            result = await handler(event, data)
            await answer()
        except (SkipHandler, CancelHandler):  # aiogram's own flow control, not failures
            raise
        except Exception as err:
            raise TapFailed(answer) from err
        return result


async def _checked(
    query: CallbackQuery,
    answer: TapAnswer,
    services: Services,
    lang: Lang,
    offers: Callable[[Pending], bool],
    *,
    claim: bool = True,
) -> tuple[Message, Pending] | None:
    """The tapped message and its pending work, checked against the tap (``offers``) and,
    with ``claim``, claimed; or None, the tap answered why not."""
    message = query.message
    try:
        if not isinstance(message, Message):  # too old for Telegram to show us
            raise Expired(None)
        await services.pending.unstored.settled(message.chat.id)
        store = services.pending
        pending = await (store.take if claim else store.look)(key_of(message), offers)
    except Refused as refusal:
        await _refuse(query, answer, services, lang, refusal)
        return None
    return message, pending


async def _refuse(
    query: CallbackQuery, answer: TapAnswer, services: Services, lang: Lang, refusal: Refused
) -> None:
    """Tell the tapper why nothing happens; log it (crafted data shows up here)."""
    chat = query.message.chat.id if query.message is not None else None
    user = query.from_user.id if query.from_user else None
    log.info(
        "tap refused (%s): user=%s chat=%s data=%.80r",
        type(refusal).__name__,
        user,
        chat,
        query.data,
    )
    await answer(services.replies.messages.template(_REFUSALS[type(refusal)], lang))


async def _do(
    answer: TapAnswer, message: Message, pending: Pending, services: Services, asker: Asker
) -> None:
    """Carry out a claimed transfer or finish and turn the message into the result."""
    lang = asker.lang
    await answer(services.replies.messages.template("tap.working", lang))
    done = await carry_out(services, pending.dialogs, pending.target, asker)
    # what the result's buttons do is stored before they show, so a quick tap finds it
    await services.pending.drop(key_of(message))
    await services.pending.remember(key_of(message), done.refs)
    await done.offer_retry(message, services)
    await edited(replace(message, done.text, done.markup(services.replies, lang)))
    await done.note_if_unannounced(message, lang, services)


async def on_target(
    query: CallbackQuery,
    callback_data: TargetTap,
    answer: TapAnswer,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """A target from the picker or from "did you mean" — one the message offered."""
    kind, bitrix_id = tapped_kind(callback_data), callback_data.id
    checked = await _checked(
        query, answer, services, lang, lambda p: p.target_offered(kind, bitrix_id) is not None
    )
    if checked is None:
        return
    message, pending = checked
    target = pending.target_offered(kind, bitrix_id)
    assert target is not None  # what _checked took it for
    plan = after_target(pending.dialogs, target)
    if plan.step is Step.CONFIRM:
        await answer()
        looks = await services.handoff.look(pending.dialogs)
        text = services.replies.confirm(pending.dialogs, looks, target, lang)
        online = await services.presence.of([target])
        if offline_first(target, looks, online):  # said in the one confirmation there is
            text = Html(f"{services.replies.offline_note(target, lang)}\n{text}")
        await _confirm(message, pending.dialogs, pending.user_id, target, text, services, lang)
        return
    # a button marked offline was seen before it was tapped: no second question
    pending.target = target
    asker = Asker.of(query, message.chat.id, event_update, supervisor_name, lang)
    await _do(answer, message, pending, services, asker)


async def on_page(
    query: CallbackQuery, callback_data: PageTap, answer: TapAnswer, services: Services, lang: Lang
) -> None:
    """Another page of the picker, or of the people a name fits (only looked at, not claimed:
    paging changes nothing). A repeated tap shows the same page again: Telegram's "not
    modified" is no failure."""
    number = callback_data.page
    checked = await _checked(
        query, answer, services, lang, lambda p: p.page_offered(number), claim=False
    )
    if checked is None:
        return
    message, pending = checked
    await answer()
    page = pending.page(number)
    online = await services.presence.of(page.targets)
    if pending.action is Action.AMBIGUOUS:
        markup = keyboards.choices(page, services.replies, lang, online)
    else:
        markup = keyboards.picker(page, services.replies, lang, online)
    await edited(message.edit_reply_markup(reply_markup=markup))


async def on_dialog(
    query: CallbackQuery,
    callback_data: DialogTap,
    answer: TapAnswer,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """One of several dialogs — one the message offered: then the typed target (after one
    question if its operator is offline), or the picker."""
    chat_id = callback_data.chat
    checked = await _checked(
        query, answer, services, lang, lambda p: p.dialog_offered(chat_id) is not None
    )
    if checked is None:
        return
    message, pending = checked
    dialog = pending.dialog_offered(chat_id)
    assert dialog is not None  # what _checked took it for
    chosen, looked = DialogRef(DialogKind.CHAT, chat_id), (dialog,)
    replies = services.replies
    if pending.target_word is None:
        await answer()
        targets = tuple(picker_targets(services.directory, looked))
        picker = Pending(Action.PICK, (chosen,), pending.user_id, looked=looked, offered=targets)
        await services.pending.put(key_of(message), picker)
        page = picker_page(targets, 0)
        online = await services.presence.of(page.targets)
        keyboard = keyboards.picker(page, replies, lang, online)
        await edited(replace(message, replies.picker(looked, lang), keyboard))
        return
    try:
        target = services.directory.resolve(pending.target_word)
    except ResolveError as err:
        await answer()
        action, offered, markup = await fitting(err, services, lang)
        await services.pending.put(
            key_of(message), Pending(action, (chosen,), pending.user_id, offered=offered)
        )
        await edited(replace(message, replies.unresolved(err, lang), markup if offered else None))
        return
    # the target was typed, so nobody has seen whether its operator is online: ask if not
    if offline_first(target, looked, await services.presence.of([target])):
        await answer()
        text = replies.offline((chosen,), looked, target, lang)
        await _confirm(message, (chosen,), pending.user_id, target, text, services, lang)
        return
    pending.dialogs, pending.target = (chosen,), target
    asker = Asker.of(query, message.chat.id, event_update, supervisor_name, lang)
    await _do(answer, message, pending, services, asker)


async def _confirm(
    message: Message,
    dialogs: tuple[DialogRef, ...],
    user_id: int,
    target: Target,
    text: Html,
    services: Services,
    lang: Lang,
) -> None:
    """Turn the tapped message into a confirmation of the transfer: ``text`` and its two
    buttons."""
    confirm = Pending(Action.CONFIRM_TRANSFER, dialogs, user_id, target=target)
    await services.pending.put(key_of(message), confirm)
    markup = keyboards.confirm("button.transfer", services.replies, lang)
    await edited(replace(message, text, markup))


async def on_confirm(
    query: CallbackQuery,
    answer: TapAnswer,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """The confirming tap of a bulk transfer or a finish."""
    checked = await _checked(
        query,
        answer,
        services,
        lang,
        lambda p: p.action in (Action.CONFIRM_TRANSFER, Action.CONFIRM_FINISH),
    )
    if checked is None:
        return
    message, pending = checked
    asker = Asker.of(query, message.chat.id, event_update, supervisor_name, lang)
    await _do(answer, message, pending, services, asker)


async def on_retry(
    query: CallbackQuery,
    answer: TapAnswer,
    event_update: Update,
    services: Services,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """ "Try again" under a result: the dialogs that did not move, looked at afresh and sent
    once more (at most one call each, as for a typed command)."""
    checked = await _checked(query, answer, services, lang, lambda p: p.action is Action.RETRY)
    if checked is None:
        return
    message, pending = checked
    asker = Asker.of(query, message.chat.id, event_update, supervisor_name, lang)
    await _do(answer, message, pending, services, asker)


async def on_cancel(
    query: CallbackQuery, answer: TapAnswer, services: Services, lang: Lang
) -> None:
    """Cancel (every keyboard has it): the buttons go, nothing else happens."""
    checked = await _checked(query, answer, services, lang, lambda p: True)
    if checked is None:
        return
    message, _ = checked
    await answer()
    await services.pending.drop(key_of(message))
    await edited(replace(message, services.replies.messages.text("cancelled", lang)))


async def on_unknown(
    query: CallbackQuery, answer: TapAnswer, services: Services, lang: Lang
) -> None:
    """Data no button of the bot carries: malformed, oversized, or of an older version."""
    await _refuse(query, answer, services, lang, NotOffered(None))


def build_router() -> Router:
    """The button handlers, each tap answered by :class:`AnswerEveryTap`."""
    router = Router(name="taps")
    router.callback_query.middleware(AnswerEveryTap())
    router.callback_query.register(on_target, Exact(TargetTap))
    router.callback_query.register(on_page, Exact(PageTap))
    router.callback_query.register(on_dialog, Exact(DialogTap))
    router.callback_query.register(on_confirm, Exact(ConfirmTap))
    router.callback_query.register(on_cancel, Exact(CancelTap))
    router.callback_query.register(on_retry, Exact(RetryTap))
    router.callback_query.register(on_unknown)  # last: whatever the filters above refused
    return router
