"""Every text the bot sends, in English and Russian, as Telegram HTML templates.

Templates are trusted HTML; every value put into them is escaped unless it is :class:`Html`
(already-rendered, already-escaped markup). Teams override any text per language in the
config's ``messages:`` section; overrides are checked at load for unknown keys and fields.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterator, Mapping
from typing import Literal

from bot.bitrix24.codes import known_code

Lang = Literal["en", "ru"]
LANGS: tuple[Lang, ...] = ("en", "ru")
MessageOverrides = dict[Lang, dict[str, str]]


class Html(str):
    """Markup that is already safe to send: not escaped again when put into a template."""

    __slots__ = ()


def escape(value: object) -> Html:
    """Escape a dynamic value for Telegram HTML."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=False))


# Texts a supervisor reads on a phone: short, what happened, what to do next.
_ERRORS: dict[str, tuple[str, str]] = {
    "CHAT_ID_EMPTY": (
        "Bitrix24 did not accept that dialog number. Check it and send the command again.",
        "Bitrix24 не принял номер диалога. Проверьте его и отправьте команду снова.",
    ),
    "USER_ID_EMPTY": (
        "Bitrix24 did not accept the operator's ID: the directory may be wrong. Tell {admin}.",
        "Bitrix24 не принял ID оператора: похоже, ошибка в справочнике. Сообщите {admin}.",
    ),
    "QUEUE_ID_EMPTY": (
        "Bitrix24 did not accept the queue's ID: the directory entry may be wrong. Tell {admin}.",
        "Bitrix24 не принял ID очереди: похоже, ошибка в справочнике. Сообщите {admin}.",
    ),
    "TRANSFER_ID_EMPTY": (
        "Bitrix24 got no operator or queue to transfer to. This is a bot fault: tell {admin}.",
        "Bitrix24 не получил, кому передать диалог. Это ошибка бота: сообщите {admin}.",
    ),
    "OPERATOR_WRONG": (
        "That operator or queue cannot take this dialog now (offline, not in the line, "
        "or it is theirs already). Pick someone else or a queue.",
        "Этот оператор или очередь сейчас не может принять диалог (не в сети, не в линии "
        "или диалог уже у него). Выберите другого оператора или очередь.",
    ),
    "ACCESS_ERROR": (
        "No such dialog, or the bot's Bitrix24 user cannot see it. Check the number.",
        "Такого диалога нет, или у пользователя бота в Bitrix24 нет к нему доступа. "
        "Проверьте номер.",
    ),
    "IM_NOT_INSTALLED": (
        "The portal's messenger module is off, so dialogs cannot be moved. Tell {admin}.",
        "На портале выключен модуль чата, диалоги передавать нельзя. Сообщите {admin}.",
    ),
    "CHAT_ID": (
        "Bitrix24 did not accept that dialog number. Check it and try again.",
        "Bitrix24 не принял номер диалога. Проверьте его и попробуйте снова.",
    ),
    "CHAT_TYPE": (
        "That chat is not an open-line dialog, so the bot cannot act on it.",
        "Этот чат — не диалог открытой линии, бот не может с ним работать.",
    ),
    "ACCESS_DENIED_400": (
        "The bot's Bitrix24 user has no rights on this dialog. Ask {admin} to give it access "
        "to the line.",
        "У пользователя бота в Bitrix24 нет прав на этот диалог. Напишите {admin}: "
        "нужен доступ к линии.",
    ),
    "USER_ID": (
        "Bitrix24 does not know the user the bot acts as: the webhook may be broken. Tell {admin}.",
        "Bitrix24 не знает пользователя, от имени которого работает бот: вебхук сломан? "
        "Сообщите {admin}.",
    ),
    "QUERY_LIMIT_EXCEEDED": (
        "The portal is busy right now. Try again in a minute.",
        "Портал сейчас перегружен запросами. Попробуйте через минуту.",
    ),
    "OPERATION_TIME_LIMIT": (
        "Bitrix24 has paused this action for the bot for up to 10 minutes (time limit). "
        "Do it in Bitrix24 itself, or try again later.",
        "Bitrix24 приостановил это действие для бота на срок до 10 минут (лимит времени). "
        "Сделайте это в самом Bitrix24 или попробуйте позже.",
    ),
    "OVERLOAD_LIMIT": (
        "Bitrix24 has blocked the portal's REST API; only Bitrix24 support can lift it. "
        "Tell {admin}.",
        "Bitrix24 заблокировал REST API портала, снять блокировку может только поддержка "
        "Bitrix24. Сообщите {admin}.",
    ),
    "INTERNAL_SERVER_ERROR": (
        "Bitrix24 had an internal error. Try again in a minute; if it repeats, tell {admin}.",
        "Внутренняя ошибка Bitrix24. Попробуйте через минуту; если повторится, сообщите {admin}.",
    ),
    "ERROR_UNEXPECTED_ANSWER": (
        "Bitrix24 had an internal error. Try again in a minute; if it repeats, tell {admin}.",
        "Внутренняя ошибка Bitrix24. Попробуйте через минуту; если повторится, сообщите {admin}.",
    ),
    "PORTAL_DELETED": (
        "The Bitrix24 portal is closed or deleted. Tell {admin}.",
        "Портал Bitrix24 закрыт или удалён. Сообщите {admin}.",
    ),
    "NO_AUTH_FOUND": (
        "Bitrix24 rejected the bot's webhook (wrong or expired). Tell {admin}.",
        "Bitrix24 не принял вебхук бота (неверный или просрочен). Сообщите {admin}.",
    ),
    "expired_token": (
        "The bot's Bitrix24 access has expired. Tell {admin}.",
        "Доступ бота к Bitrix24 истёк. Сообщите {admin}.",
    ),
    "INVALID_CREDENTIALS": (
        "The bot's Bitrix24 user lacks the rights for this. Tell {admin}.",
        "У пользователя бота в Bitrix24 не хватает прав. Сообщите {admin}.",
    ),
    "insufficient_scope": (
        "The bot's webhook lacks the «imopenlines» permission. Tell {admin}.",
        "У вебхука бота нет права «imopenlines». Сообщите {admin}.",
    ),
    "user_access_error": (
        "The bot's Bitrix24 user is not allowed to use the app. Tell {admin}.",
        "Пользователю бота в Bitrix24 не разрешено это приложение. Сообщите {admin}.",
    ),
    "ACCESS_DENIED_403": (
        "The portal's plan does not include the REST API (paid plans only). Tell {admin}.",
        "Тариф портала не включает REST API (только платные тарифы). Сообщите {admin}.",
    ),
    "INVALID_REQUEST": (
        "Bitrix24 requires https: the bot's webhook address is wrong. Tell {admin}.",
        "Bitrix24 требует https: адрес вебхука бота неверный. Сообщите {admin}.",
    ),
    "ERROR_BATCH_LENGTH_EXCEEDED": (
        "Too many dialogs at once for Bitrix24. Send fewer in one command.",
        "Слишком много диалогов за раз для Bitrix24. Отправьте меньше в одной команде.",
    ),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": (
        "Bitrix24 refused a grouped request. Try again; if it repeats, tell {admin}.",
        "Bitrix24 отклонил групповой запрос. Попробуйте снова; если повторится, сообщите {admin}.",
    ),
    "ERROR_METHOD_NOT_FOUND": (
        "This portal does not offer the needed method (old version or module off). Tell {admin}.",
        "На портале нет нужного метода (старая версия или модуль выключен). Сообщите {admin}.",
    ),
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": (
        "Bitrix24 refused the request (app manifest unavailable). Tell {admin}.",
        "Bitrix24 отклонил запрос (манифест приложения недоступен). Сообщите {admin}.",
    ),
    "invalid_request": (
        "The bot could not renew its Bitrix24 access (bad request). Tell {admin}.",
        "Бот не смог обновить доступ к Bitrix24 (неверный запрос). Сообщите {admin}.",
    ),
    "invalid_client": (
        "Bitrix24 does not accept the bot's app credentials. Tell {admin}.",
        "Bitrix24 не принимает данные приложения бота. Сообщите {admin}.",
    ),
    "invalid_grant": (
        "The bot's Bitrix24 authorization has lapsed: the app must be authorized again. "
        "Tell {admin}.",
        "Авторизация бота в Bitrix24 истекла: приложение нужно авторизовать заново. "
        "Сообщите {admin}.",
    ),
    "invalid_scope": (
        "The bot's app lacks the permissions it needs. Tell {admin}.",
        "У приложения бота не хватает разрешений. Сообщите {admin}.",
    ),
    "PAYMENT_REQUIRED": (
        "The bot's Bitrix24 app is not paid for. Tell {admin}.",
        "Приложение бота в Bitrix24 не оплачено. Сообщите {admin}.",
    ),
    "NETWORK_ERROR": (
        "Cannot reach Bitrix24 (connection failed). Try again in a minute.",
        "Нет связи с Bitrix24 (не удалось подключиться). Попробуйте через минуту.",
    ),
    "DNS_ERROR": (
        "The portal's address does not resolve: check the webhook URL. Tell {admin}.",
        "Адрес портала не найден (DNS): проверьте URL вебхука. Сообщите {admin}.",
    ),
    "TLS_ERROR": (
        "The secure connection to Bitrix24 failed (certificate). Tell {admin}.",
        "Не удалось установить защищённое соединение с Bitrix24 (сертификат). Сообщите {admin}.",
    ),
    "TIMEOUT": (
        "Bitrix24 did not answer in time; nothing was changed. Try again in a minute.",
        "Bitrix24 не ответил вовремя, ничего не изменилось. Попробуйте через минуту.",
    ),
    "BAD_RESPONSE": (
        "Bitrix24 sent a garbled answer (its proxy may be down). Try again in a minute.",
        "Bitrix24 прислал непонятный ответ (возможно, сбой прокси). Попробуйте через минуту.",
    ),
    "RESULT_FALSE": (
        "Bitrix24 refused without saying why. Check the dialog in Bitrix24.",
        "Bitrix24 отказал без объяснения причин. Проверьте диалог в Bitrix24.",
    ),
    "OUTCOME_UNKNOWN": (
        "Bitrix24 did not confirm. The dialog may or may not have moved: check it in Bitrix24 "
        "before trying again.",
        "Bitrix24 не подтвердил, выполнено ли действие: проверьте диалог в Bitrix24, "
        "прежде чем повторять.",
    ),
    "NOT_CONFIGURED": (
        "The bot has no Bitrix24 webhook configured. Tell {admin}.",
        "У бота не настроен вебхук Bitrix24. Сообщите {admin}.",
    ),
    "PORTAL_MOVED": (
        "The Bitrix24 portal has moved to a new address: the bot's settings must be updated. "
        "Tell {admin}.",
        "Портал Bitrix24 переехал на новый адрес: его нужно обновить в настройках бота. "
        "Сообщите {admin}.",
    ),
}

_TEXTS: dict[str, tuple[str, str]] = {
    "error.unknown": (
        "Bitrix24 answered with an error the bot does not know. If it repeats, tell {admin}.",
        "Bitrix24 ответил неизвестной боту ошибкой. Если повторится, сообщите {admin}.",
    ),
    "error.suffix": ("{text} <i>({code})</i>", "{text} <i>({code})</i>"),
    "admin.default": ("the bot's admin", "администратору бота"),
    "usage": (
        "Usage: <code>/transfer &lt;dialog&gt; &lt;who&gt;</code>\nExample: <code>{example}</code>",
        "Формат: <code>/transfer &lt;диалог&gt; &lt;кому&gt;</code>\n"
        "Пример: <code>{example}</code>",
    ),
    "usage.empty": (
        "Which dialog, and to whom?",
        "Какой диалог и кому?",
    ),
    "usage.no_target": (
        "To whom? Put an operator (@name) or a queue (#name) last.",
        "Кому? Последним укажите оператора (@имя) или очередь (#имя).",
    ),
    "usage.no_dialog": (
        "Which dialog? Put its number before the name.",
        "Какой диалог? Укажите его номер перед именем.",
    ),
    "usage.bad_dialog": (
        "«{token}» is not a dialog number.",
        "«{token}» — не номер диалога.",
    ),
    "usage.bad_link": (
        "That link does not point to a dialog (expected IM_DIALOG=chat… or IM_HISTORY=imol|…).",
        "Ссылка не ведёт на диалог (нужна IM_DIALOG=chat… или IM_HISTORY=imol|…).",
    ),
    "usage.bad_target": (
        "«{token}» is not a name (use @name, #queue, user:15 or queue:3).",
        "«{token}» — не имя (используйте @имя, #очередь, user:15 или queue:3).",
    ),
    "usage.too_many": (
        "Too many dialogs in one command: {limit} at most.",
        "Слишком много диалогов в одной команде: не больше {limit}.",
    ),
    "unknown_name": (
        "I don't know «{token}». Did you mean {suggestions}?",
        "Не знаю «{token}». Может быть, {suggestions}?",
    ),
    "unknown_name.none": (
        "I don't know «{token}». See /operators and /queues.",
        "Не знаю «{token}». Список: /operators и /queues.",
    ),
    "ambiguous_name": (
        "«{token}» fits {count} people. Pick one:",
        "Под «{token}» подходят несколько сотрудников ({count}). Кого выбрать?",
    ),
    "or": (" or ", " или "),
    "result.ok": (
        "✅ Dialog {dialog}: {previous} → {target}",
        "✅ Диалог {dialog}: {previous} → {target}",
    ),
    "result.already": (
        "☑️ Dialog {dialog} is already with {target}; nothing to do.",
        "☑️ Диалог {dialog} уже у этого оператора ({target}), ничего не делаю.",
    ),
    "result.already_queue": (
        "☑️ Dialog {dialog} is already waiting in {target}; nothing to do.",
        "☑️ Диалог {dialog} уже ждёт в очереди «{target}», ничего не делаю.",
    ),
    "result.duplicate": (
        "↪️ {token} is dialog {dialog} again; done once.",
        "↪️ {token} — это снова диалог {dialog}; сделано один раз.",
    ),
    "result.failed": ("❌ Dialog {dialog}: {reason}", "❌ Диалог {dialog}: {reason}"),
    "result.not_moved.operator": (
        "❌ Bitrix24 accepted the transfer, but dialog {dialog} is still {where}. "
        "{target} may be an extranet user or a bot, or the dialog was being moved already.",
        "❌ Bitrix24 принял передачу, но диалог {dialog} по-прежнему {where}. "
        "Возможно, {target} — экстранет-пользователь или бот, или диалог в тот момент уже "
        "передавали.",
    ),
    "result.not_moved.queue": (
        "❌ Bitrix24 accepted the transfer, but dialog {dialog} is still {where}. "
        "The portal may have no line {target} (check its ID), or the dialog was being "
        "moved already.",
        "❌ Bitrix24 принял передачу, но диалог {dialog} по-прежнему {where}. "
        "Возможно, на портале нет линии «{target}» (проверьте её ID), или диалог в тот момент "
        "уже передавали.",
    ),
    "result.not_moved.finished": (
        "❌ Dialog {dialog} was not moved: it has been finished.",
        "❌ Диалог {dialog} не передан: он завершён.",
    ),
    "result.not_finished": (
        "❌ Bitrix24 accepted the finish, but dialog {dialog} is still open ({where}).",
        "❌ Bitrix24 принял завершение, но диалог {dialog} всё ещё открыт ({where}).",
    ),
    "result.unclear": (
        "❌ Dialog {dialog} is still {where}: {reason}",
        "❌ Диалог {dialog} по-прежнему {where}: {reason}",
    ),
    "unclear.lost": (
        "Bitrix24's answer was lost, and it may still carry the request out late. Check "
        "before trying again.",
        "Ответ Bitrix24 потерялся, и запрос ещё может выполниться с опозданием. Проверьте, "
        "прежде чем повторять.",
    ),
    "result.closed": (
        "🏁 Dialog {dialog} is finished; there is nothing to transfer.",
        "🏁 Диалог {dialog} завершён, передавать нечего.",
    ),
    "result.closed_already": (
        "☑️ Dialog {dialog} is finished already; nothing to do.",
        "☑️ Диалог {dialog} уже завершён, ничего не делаю.",
    ),
    "where.with": ("with {name}", "у оператора {name}"),
    "where.with_user": ("with user {id}", "у пользователя {id}"),
    "where.queue": ("waiting in {name}", "в очереди «{name}»"),
    "where.nobody": ("unassigned", "без оператора"),
    "announce": (
        "🔁 Dialog {dialog}: {previous} → {target}, by {by}",
        "🔁 Диалог {dialog}: {previous} → {target}, передал(а) {by}",
    ),
    "announce.failed": (
        "Transferred, but the team chat was not notified.",
        "Передано, но в общий чат сообщить не удалось.",
    ),
    "picker.one": (
        "Dialog {dialog} is {where}. Move it to:",
        "Диалог {dialog} сейчас {where}. Кому передать?",
    ),
    "picker.many": ("Move {count} dialogs to:", "Кому передать диалоги ({count})?"),
    "choose": ("Which dialog?", "Какой диалог?"),
    "confirm.transfer": (
        "Transfer {count} dialogs to {target}?",
        "Передать диалоги ({count}) оператору {target}?",
    ),
    "confirm.transfer_queue": (
        "Transfer {count} dialogs to {target}?",
        "Передать диалоги ({count}) в очередь «{target}»?",
    ),
    "confirm.finish": (
        "Finish these {count} dialogs? Their customers' sessions will be closed.",
        "Завершить эти диалоги ({count})? Сессии клиентов будут закрыты.",
    ),
    "confirm.finish_one": (
        "Finish this dialog? The customer's session will be closed.",
        "Завершить этот диалог? Сессия клиента будет закрыта.",
    ),
    "confirm.line": ("• {dialog} · {holder}", "• {dialog} · {holder}"),
    "button.next": ("Next »", "Дальше »"),
    "button.back": ("« Back", "« Назад"),
    "button.cancel": ("Cancel", "Отмена"),
    "button.transfer": ("✅ Transfer", "✅ Передать"),
    "button.finish": ("🏁 Finish", "🏁 Завершить"),
    "button.retry": ("🔁 Try again", "🔁 Ещё раз"),
    "tap.expired": (
        "These buttons have expired: send the command again.",
        "Эти кнопки устарели: отправьте команду снова.",
    ),
    "tap.taken": ("Already being done.", "Уже выполняется."),
    "tap.not_valid": ("This button is not valid any more.", "Эта кнопка больше не действует."),
    "tap.working": ("Working…", "Выполняю…"),
    "tap.not_supervisor": (
        "Only the bot's supervisors can use these buttons.",
        "Эти кнопки только для супервайзеров бота.",
    ),
    "cancelled": ("Cancelled; nothing was changed.", "Отменено, ничего не изменилось."),
    "result.finished": (
        "🏁 Dialog {dialog} finished (it was {where}).",
        "🏁 Диалог {dialog} завершён (был {where}).",
    ),
    "announce.finished": (
        "🏁 Dialog {dialog} finished by {by} (it was {where})",
        "🏁 Диалог {dialog} завершил(а) {by} (был {where})",
    ),
    "usage.finish": (
        "Which dialog? Example: <code>/finish 2043</code>, or reply /finish to my message "
        "about it.",
        "Какой диалог? Пример: <code>/finish 2043</code>, или ответьте /finish на моё "
        "сообщение о нём.",
    ),
    "restarted.cut_off": (
        "⚠️ I was restarted while carrying out this command, so I can't tell whether it was "
        "done. Check before sending it again.",
        "⚠️ Меня перезапустили, пока я выполнял эту команду, и я не знаю, выполнена ли она. "
        "Проверьте, прежде чем отправлять снова.",
    ),
    "restarted.now": ("Now:", "Сейчас:"),
    "stale": (
        "Not carried out: you sent this {minutes} min ago, while I was down. Send it again if "
        "it is still needed.",
        "Не выполнено: вы отправили это {minutes} мин назад, когда я не работал. Отправьте "
        "снова, если это ещё нужно.",
    ),
    "history.usage": (
        "Whose history? Example: <code>/history 2043</code> or <code>/history @anna</code>",
        "Чья история? Пример: <code>/history 2043</code> или <code>/history @anna</code>",
    ),
    "history.none": ("Nothing recorded about {word}.", "Ничего не записано: {word}."),
    "history.line": (
        "{time} · {dialog} → {target} · {outcome} · {by}",
        "{time} · {dialog} → {target} · {outcome} · {by}",
    ),
    "history.finished": ("finished", "завершён"),
    "reload.done": ("Config reloaded.", "Настройки перечитаны."),
    "reload.nothing": ("Config reloaded: no changes.", "Настройки перечитаны: без изменений."),
    "reload.failed": (
        "Config not reloaded; the old one stays in force:",
        "Настройки не перечитаны, действуют прежние:",
    ),
    "reload.not_admin": (
        "Only the bot's admins can reload its config.",
        "Перечитать настройки могут только администраторы бота.",
    ),
    "holder.user": ("user {id}", "пользователь {id}"),
    "holder.nobody": ("queue (unassigned)", "очередь (без оператора)"),
    "not_supervisor": (
        "Sorry, you are not on this bot's supervisors list. Ask {admin} to add your Telegram ID "
        "<code>{user_id}</code>.",
        "Извините, вас нет в списке супервайзеров этого бота. Напишите {admin} и сообщите "
        "ваш Telegram ID <code>{user_id}</code>.",
    ),
    "wrong_chat": (
        "I only work in the team chats listed in my config. Ask {admin} to add this chat "
        "(ID <code>{chat_id}</code>), or write to me privately.",
        "Я работаю только в чатах команды из моих настроек. Напишите {admin}, чтобы добавить "
        "этот чат (ID <code>{chat_id}</code>), или пишите мне в личку.",
    ),
    "internal_error": (
        "Something went wrong inside the bot. Check the dialog in Bitrix24 before trying "
        "again, and tell {admin}.",
        "Внутри бота что-то сломалось. Проверьте диалог в Bitrix24, прежде чем повторять, "
        "и сообщите {admin}.",
    ),
    "not_understood": (
        "I only understand commands. See /help.",
        "Я понимаю только команды. См. /help.",
    ),
    "help": (
        "I move Bitrix24 dialogs between operators and queues.\n\n"
        "<code>/transfer 2043 @{operator}</code> to an operator\n"
        "<code>/transfer 2043 #{queue}</code> to a queue\n"
        "<code>/transfer 2043 2044 @{operator}</code> several dialogs\n"
        "<code>/transfer s3567 @{operator}</code> by session number\n"
        "<code>/transfer 2043 user:15</code> by Bitrix24 ID\n"
        "<code>/transfer 2043</code> pick from a list\n"
        "<code>/finish 2043</code> finish a dialog\n\n"
        "Paste a dialog link instead of the number, or reply <code>/transfer @{operator}</code> "
        "to my message about a dialog.\n"
        "/operators and /queues list the names.",
        "Я передаю диалоги Bitrix24 между операторами и очередями.\n\n"
        "<code>/transfer 2043 @{operator}</code> оператору\n"
        "<code>/transfer 2043 #{queue}</code> в очередь\n"
        "<code>/transfer 2043 2044 @{operator}</code> несколько диалогов\n"
        "<code>/transfer s3567 @{operator}</code> по номеру сессии\n"
        "<code>/transfer 2043 user:15</code> по ID в Bitrix24\n"
        "<code>/transfer 2043</code> выбрать из списка\n"
        "<code>/finish 2043</code> завершить диалог\n\n"
        "Вместо номера можно вставить ссылку на диалог или ответить "
        "<code>/transfer @{operator}</code> на моё сообщение о диалоге.\n"
        "Имена: /operators и /queues.",
    ),
    "operators.title": ("<b>Operators</b>", "<b>Операторы</b>"),
    "queues.title": ("<b>Queues</b>", "<b>Очереди</b>"),
    "directory.empty": ("(none found)", "(никого не найдено)"),
    "directory.more": (
        "…and {count} more. Search: <code>{command} anna</code>",
        "…и ещё {count}. Поиск: <code>{command} anna</code>",
    ),
    "command.transfer": (
        "Move a dialog: /transfer 2043 @anna",
        "Передать диалог: /transfer 2043 @anna",
    ),
    "command.operators": ("Operators and their names", "Операторы и их имена"),
    "command.queues": ("Queues (open lines)", "Очереди (открытые линии)"),
    "command.help": ("How to use the bot", "Как пользоваться ботом"),
    "command.finish": ("Finish a dialog (with a confirming tap)", "Завершить диалог"),
    "command.history": ("Who moved a dialog, and when", "Кто и когда передавал диалог"),
    "command.reload": ("Re-read the config (admins)", "Перечитать настройки (админы)"),
    # ---- failures grouped; /history in words and in the team's time zone (issue 12) ----
    "result.failed_many": ("❌ Dialogs {dialogs}: {reason}", "❌ Диалоги {dialogs}: {reason}"),
    "history.line.no_target": (
        "{time} · {dialog} · {outcome} · {by}",
        "{time} · {dialog} · {outcome} · {by}",
    ),
    "history.one_at_a_time": (
        "One dialog or one name at a time.",
        "Только один диалог или одно имя за раз.",
    ),
    "history.moved": ("moved", "передан"),
    "history.not_moved": ("did not move", "не перешёл"),
    "history.not_finished": ("did not finish", "не завершился"),
    "history.already": ("was there already", "уже был там"),
    "history.closed": ("was finished already", "уже был завершён"),
    "history.duplicate": ("named twice, done once", "назван дважды, сделано один раз"),
    "history.repeated": ("delivered twice, ignored", "пришло повторно, пропущено"),
    "history.stale": ("not done: too old", "не выполнено: устарело"),
    "history.cut_off": ("cut off by a restart", "прервано перезапуском"),
    "history.no_dialog": ("no such dialog", "нет такого диалога"),
    "history.operator_wrong": ("operator could not take it", "оператор не смог принять"),
    "history.timeout": ("no answer from Bitrix24", "Bitrix24 не ответил"),
    "history.network": ("no connection to Bitrix24", "нет связи с Bitrix24"),
    "history.busy": ("portal busy", "портал перегружен"),
    "history.unconfirmed": ("not confirmed", "не подтверждено"),
    "history.error": ("error {code}", "ошибка {code}"),
    # one dialog to confirm: the others named could not be seen (not "1 dialogs")
    "confirm.transfer_one": (
        "Transfer this dialog to {target}?",
        "Передать этот диалог оператору {target}?",
    ),
    "confirm.transfer_one_queue": (
        "Transfer this dialog to {target}?",
        "Передать этот диалог в очередь «{target}»?",
    ),
    # ---- who is free: a name that fits several, online marks, offline operators ----------
    "ambiguous_name.mixed": (
        "«{token}» fits {count} names. Pick one:",
        "Под «{token}» подходят несколько имён ({count}). Выберите:",
    ),
    "button.more": ("More »", "Ещё »"),
    "offline.one": (
        "⚪ {target} is offline. Transfer dialog {dialog} anyway?",
        "⚪ Оператор {target} не в сети. Всё равно передать диалог {dialog}?",
    ),
    "offline.many": (
        "⚪ {target} is offline. Transfer {count} dialogs anyway?",
        "⚪ Оператор {target} не в сети. Всё равно передать диалоги ({count})?",
    ),
    "offline.note": ("⚪ {target} is offline.", "⚪ Оператор {target} не в сети."),
    # ---- issue 12: what a command that does not parse gets; each command's own usage ----
    "usage.misread": (
        "{dialogs} → {target}: I don't understand «{word}».",
        "{dialogs} → {target}: не понимаю «{word}».",
    ),
    "usage.two_targets": (
        "{dialogs} → {target} or {second}? One name per command.",
        "{dialogs} → {target} или {second}? Нужно одно имя.",
    ),
    "usage.bad_target.after": (
        "{dialogs} → ?: «{token}» is not a name (use @name, #queue, user:15 or queue:3).",
        "{dialogs} → ?: «{token}» — не имя (используйте @имя, #очередь, user:15 или queue:3).",
    ),
    "usage.finish_target": (
        "/finish takes dialogs only; «{token}» is not one.",
        "/finish принимает только диалоги, а «{token}» — не диалог.",
    ),
    "usage.finish.form": (
        "Usage: <code>/finish &lt;dialog&gt; [&lt;dialog&gt; …]</code>\n"
        "Example: <code>/finish 2043</code>",
        "Формат: <code>/finish &lt;диалог&gt; [&lt;диалог&gt; …]</code>\n"
        "Пример: <code>/finish 2043</code>",
    ),
    "unknown_command": ("There is no /{command} command.", "Команды /{command} нет."),
    "unknown_command.guess": (
        "There is no /{command} command. Did you mean /{guess}?",
        "Команды /{command} нет. Может быть, /{guess}?",
    ),
    "unknown_command.list": (
        "Commands: /transfer /finish /history /operators /queues /help",
        "Команды: /transfer /finish /history /operators /queues /help",
    ),
}


def _error_key(key: str) -> str:
    return f"error.{key}"


CATALOG: dict[str, tuple[str, str]] = {
    **_TEXTS,
    **{_error_key(key): texts for key, texts in _ERRORS.items()},
}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_overrides(
    overrides: Mapping[Lang, Mapping[str, str]],
) -> Iterator[tuple[tuple[str, ...], str]]:
    """Problems with config ``messages:`` overrides: unknown keys or fields, broken braces."""
    for lang, texts in overrides.items():
        for key, template in texts.items():
            if not isinstance(template, str):
                continue  # the schema reports it: "must be text"
            if key not in CATALOG:
                yield (lang, key), "no such message (see the list in the README)"
                continue
            allowed = _fields(CATALOG[key][0]) | {"admin"}
            try:
                used = _fields(template)
            except ValueError as exc:
                yield (lang, key), f"broken {{placeholder}}: {exc}"
                continue
            extra = used - allowed
            if extra:
                names = ", ".join(sorted("{" + name + "}" for name in allowed)) or "none"
                yield (lang, key), f"unknown placeholder {sorted(extra)[0]}; allowed: {names}"


def pick_language(setting: str, user_language: str | None) -> Lang:
    """``en``/``ru`` from config, or from the user's Telegram language when ``auto``."""
    if setting in LANGS:
        return "ru" if setting == "ru" else "en"
    if user_language and user_language.lower().split("-")[0] in ("ru", "uk", "be", "kk"):
        return "ru"
    return "en"


class Messages:
    """Renders texts by key and language, with config overrides and escaping applied."""

    def __init__(
        self, overrides: MessageOverrides | None = None, admin_contact: str | None = None
    ) -> None:
        self._overrides = overrides or {}
        self._admin_contact = admin_contact

    def template(self, key: str, lang: Lang) -> str:
        """The raw template for ``key``, an override if the team set one."""
        override = self._overrides.get(lang, {}).get(key)
        if override is not None:
            return override
        return CATALOG[key][LANGS.index(lang)]

    def text(self, key: str, lang: Lang, **params: object) -> Html:
        """Render ``key``; ``{admin}`` is always available."""
        values = {name: escape(value) for name, value in params.items()}
        values.setdefault("admin", self.admin(lang))
        return Html(self.template(key, lang).format_map(values))

    def admin(self, lang: Lang) -> Html:
        """Who to tell about problems only the bot's admin can fix."""
        if self._admin_contact:
            return escape(self._admin_contact)
        return escape(self.template("admin.default", lang))

    def error(self, code: str, status: int | None, lang: Lang) -> Html:
        """The friendly text for an error code, with the raw code small at the end."""
        entry = known_code(code, status)
        key = _error_key(entry.key) if entry else "error.unknown"
        return self.text("error.suffix", lang, text=self.text(key, lang), code=code)
