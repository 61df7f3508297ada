"""What the bot says: outcomes, usage errors and directory listings rendered as Telegram HTML.

Pure functions of their inputs (messages, directory, outcomes), so every reply is unit-tested
without Telegram. Every dynamic value is escaped by :class:`bot.messages.Messages`.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, tzinfo
from typing import Literal, NamedTuple

from bot.bitrix24.client import Dialog
from bot.bitrix24.codes import BAD_RESPONSE, NETWORK_ERROR, TIMEOUT
from bot.bitrix24.errors import BitrixError
from bot.command import DialogRef, UsageError, closest_command
from bot.directory import (
    AmbiguousName,
    BadTarget,
    Directory,
    Kind,
    ResolveError,
    Target,
    UnknownName,
)
from bot.flow import Misread
from bot.handoff import Outcome, Status
from bot.messages import Html, Lang, Messages, escape
from bot.storage import AuditEntry

MAX_NAME = 60  # a dialog's name as shown: one phone line, not a paragraph
MAX_LISTED = 50  # /operators lines; a directory of thousands is searched, not scrolled
# a message's text after its HTML is parsed: 4096 characters (TDLib counts code points);
# counted here in UTF-16 units, an emoji twice, which is never less and so always safe
TELEGRAM_LIMIT = 4096
# raw HTML per message, as a multiple of the limit: room for a message of escaped characters
# (``&amp;`` is five), a bound on requests that a markup bug cannot blow up
RAW_FACTOR = 4
# an operator's online mark on a button (Bitrix24 IS_ONLINE); queues and unknowns have none
ONLINE, OFFLINE = "🟢", "⚪"
# answers that were lost on the way, rather than errors the portal reported
_LOST = frozenset({TIMEOUT, NETWORK_ERROR, BAD_RESPONSE})
# how an audit entry ended, in words (``history.*`` texts); any other code reads "error CODE"
_ENDINGS = {
    "already": "history.already",
    "closed": "history.closed",
    "duplicate": "history.duplicate",
    "DUPLICATE": "history.repeated",
    "STALE": "history.stale",
    "CUT_OFF": "history.cut_off",
    "ACCESS_ERROR": "history.no_dialog",
    "OPERATOR_WRONG": "history.operator_wrong",
    "TIMEOUT": "history.timeout",
    "NETWORK_ERROR": "history.network",
    "QUERY_LIMIT_EXCEEDED": "history.busy",
    "OUTCOME_UNKNOWN": "history.unconfirmed",
}


class _Failure(NamedTuple):
    """A dialog that failed, and why: told on one line with the others that failed alike."""

    dialog: Html
    reason: Html


def split_message(
    text: str, limit: int = TELEGRAM_LIMIT, raw_limit: int | None = None
) -> list[str]:
    """Cut a reply into messages Telegram accepts: each at most ``limit`` UTF-16 units of
    visible text and ``raw_limit`` characters of HTML (default ``RAW_FACTOR * limit``).

    Messages break only at a newline outside every tag, so each piece is balanced HTML when
    ``text`` is. A single line too long for one message is shortened (see :func:`shorten`)
    rather than cut into pieces that would not parse. Blank lines that would start a new
    message are dropped: Telegram trims them anyway, and a blank message is refused.
    """
    raw_limit = _checked(limit, raw_limit)
    if 2 * len(text) <= limit and len(text) <= raw_limit:
        return [text]  # what shows is never longer than the HTML, a character two units at most
    chunks: list[tuple[str, bool]] = []  # each message, and whether it is blank
    current: list[str] = []
    width = size = 0
    blank = True
    for line in _lines(_tokens(text)):
        if line.width > limit or line.size > raw_limit:
            line = _Line(_shorten(line.tokens, limit, raw_limit))
        if current and width + 1 + line.width <= limit and size + 1 + line.size <= raw_limit:
            current.append(line.html)
            width, size, blank = width + 1 + line.width, size + 1 + line.size, blank and line.blank
            continue
        if current:
            chunks.append(("\n".join(current), blank))
            current = []
        if line.blank and chunks:
            continue
        current, width, size, blank = [line.html], line.width, line.size, line.blank
    if current:
        chunks.append(("\n".join(current), blank))
    # only the first message can be blank; a blank text still gives that one, as it always did
    return [c for c, is_blank in chunks if not is_blank] or [chunks[0][0]]


def shorten(html: str, limit: int = TELEGRAM_LIMIT, raw_limit: int | None = None) -> str:
    """``html`` whole if it fits one message, else its visible text cut to fit and "…" added.

    The cut falls between characters of the text, never inside a tag or a character
    reference (``&amp;`` is one character), and the tags left open are closed, so the
    result parses exactly as the start of ``html`` did.
    """
    raw_limit = _checked(limit, raw_limit)
    tokens = _tokens(html)
    line = _Line(tokens)
    if line.width <= limit and line.size <= raw_limit:
        return html
    return _shorten(tokens, limit, raw_limit)


def html_size(html: str) -> tuple[int, int]:
    """How long ``html`` is for Telegram: UTF-16 units of visible text, and raw characters."""
    line = _Line(_tokens(html))
    return line.width, line.size


def _checked(limit: int, raw_limit: int | None) -> int:
    """``raw_limit`` or its default; a limit too small for even "…" is a bug of the caller."""
    raw_limit = RAW_FACTOR * limit if raw_limit is None else raw_limit
    if min(limit, raw_limit) < len(_ELLIPSIS):
        raise ValueError(f"no message fits in {limit} characters ({raw_limit} raw)")
    return raw_limit


# Telegram HTML, token by token: a tag (quoted attributes may hold ">"), a character
# reference, a newline, or a run of plain text.
_TOKEN = re.compile(
    r"""(?P<tag><(?:[^<>"']|"[^"]*"|'[^']*')*>)"""
    r"|(?P<ref>&(?:[A-Za-z]+|#[0-9]+|#[xX][0-9A-Fa-f]+);)"
    r"|(?P<nl>\n)"
    r"|(?P<text>[^<&\n]+|[<&])"
)
_TAG_NAME = re.compile(r"</?\s*([^\s/>]*)")
# the only named references Telegram decodes; any other shows as typed
_NAMED = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"'}
_ELLIPSIS = "…"


class _Token(NamedTuple):
    kind: str  # "open", "close", "ref", "nl" or "text"
    raw: str  # as written in the HTML
    shown: str  # what Telegram shows for it ("" for a tag)
    name: str = ""  # a tag's name


def _utf16(text: str) -> int:
    """Telegram's unit of length: characters beyond the BMP (most emoji) count twice."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _tokens(html: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(html):
        raw = match.group()
        if match.lastgroup == "tag":
            name = _TAG_NAME.match(raw)
            kind = "close" if raw.startswith("</") else "open"
            tokens.append(_Token(kind, raw, "", name.group(1).lower() if name else ""))
        elif match.lastgroup == "ref":
            shown = _NAMED.get(raw) or (html_lib.unescape(raw) if raw[1] == "#" else raw)
            tokens.append(_Token("ref", raw, shown))
        else:
            tokens.append(_Token(match.lastgroup or "text", raw, raw))
    return tokens


class _Line:
    """A piece of HTML that messages may break around: its tokens and sizes."""

    def __init__(self, tokens: list[_Token] | str) -> None:
        self.tokens = _tokens(tokens) if isinstance(tokens, str) else tokens
        self.html = "".join(t.raw for t in self.tokens)
        self.width = sum(_utf16(t.shown) for t in self.tokens)
        self.size = len(self.html)
        self.blank = all(not t.shown or t.shown.isspace() for t in self.tokens)


def _lines(tokens: list[_Token]) -> list[_Line]:
    """``tokens`` cut at each newline outside every tag (one inside a tag stays put)."""
    lines: list[_Line] = []
    current: list[_Token] = []
    depth = 0
    for token in tokens:
        if token.kind == "nl" and depth == 0:
            lines.append(_Line(current))
            current = []
            continue
        if token.kind == "open":
            depth += 1
        elif token.kind == "close":
            depth = max(0, depth - 1)
        current.append(token)
    lines.append(_Line(current))
    return lines


def _shorten(tokens: list[_Token], limit: int, raw_limit: int) -> str:
    """The longest start of ``tokens`` that fits with "…" after it, its open tags closed."""
    width_left = limit - _utf16(_ELLIPSIS)
    size_left = raw_limit - len(_ELLIPSIS)  # less the end tags owed, kept in ``owed``
    out: list[str] = []
    open_tags: list[tuple[str, int]] = []  # the end tag owed, and where the start tag is
    owed = 0
    for token in tokens:
        if token.kind == "open":
            end = f"</{token.name}>"
            if len(token.raw) + len(end) > size_left - owed:
                break
            open_tags.append((end, len(out)))
            out.append(token.raw)
            size_left -= len(token.raw)
            owed += len(end)
        elif token.kind == "close":
            if open_tags:  # a stray end tag would not parse: left out
                end, _ = open_tags.pop()
                out.append(end)
                size_left -= len(end)
                owed -= len(end)
        elif _utf16(token.shown) <= width_left and len(token.raw) <= size_left - owed:
            out.append(token.raw)
            width_left -= _utf16(token.shown)
            size_left -= len(token.raw)
        else:
            # plain text is cut between characters (one raw character each); a reference
            # or a tag is whole or left out
            kept = _prefix(token.raw, width_left, size_left - owed) if token.kind == "text" else ""
            if kept:
                out.append(kept)
            break
    for end, start in reversed(open_tags):
        if start == len(out) - 1:  # nothing kept inside: drop the tag, not an empty entity
            out.pop()
        else:
            out.append(end)
    return "".join(out).rstrip() + _ELLIPSIS


def _prefix(text: str, width: int, size: int) -> str:
    """The longest start of plain ``text`` within ``width`` UTF-16 units and ``size`` chars."""
    kept = 0
    for count, ch in enumerate(text[: max(0, size)]):
        kept += 2 if ord(ch) > 0xFFFF else 1
        if kept > width:
            return text[:count]
    return text[: max(0, size)]


def quoted(word: str, limit: int = 40) -> str:
    """A word the user typed, as the reply quotes it: long ones shortened."""
    return word if len(word) <= limit else word[: limit - 1] + "…"


class Replies:
    """Renders the bot's texts for one configured team."""

    def __init__(self, messages: Messages, directory: Directory) -> None:
        self.messages = messages
        self.directory = directory

    # ---- names --------------------------------------------------------------------------

    def target(self, target: Target, lang: Lang) -> Html:
        """A target's display name, or "user 15" / "queue 3" for raw IDs."""
        if target.key is None and self.directory.name_of(target.kind, target.bitrix_id) is None:
            if target.kind is Kind.OPERATOR:
                return self.messages.text("holder.user", lang, id=target.bitrix_id)
            return escape(f"queue:{target.bitrix_id}")
        return escape(target.name)

    def holder(self, dialog: Dialog, lang: Lang) -> Html:
        """Who holds a dialog now: an operator's name, "user 27", or the queue it waits in."""
        if dialog.owner_id > 0:
            name = self.directory.name_of(Kind.OPERATOR, dialog.owner_id)
            if name is not None:
                return escape(name)
            return self.messages.text("holder.user", lang, id=dialog.owner_id)
        if dialog.line_id is not None:
            queue = self.directory.name_of(Kind.QUEUE, dialog.line_id)
            if queue is not None:
                return escape(queue)
        return self.messages.text("holder.nobody", lang)

    def whereabouts(self, dialog: Dialog, lang: Lang) -> Html:
        """Where a dialog is: "with Bob Lee", "waiting in Support line", "unassigned"."""
        text = self.messages.text
        if dialog.owner_id > 0:
            name = self.directory.name_of(Kind.OPERATOR, dialog.owner_id)
            if name is None:  # Russian declines "user", never a name: two phrasings
                return text("where.with_user", lang, id=dialog.owner_id)
            return text("where.with", lang, name=name)
        if dialog.line_id is not None:
            queue = self.directory.name_of(Kind.QUEUE, dialog.line_id)
            return text("where.queue", lang, name=queue or f"queue:{dialog.line_id}")
        return text("where.nobody", lang)

    @staticmethod
    def dialog(outcome: Outcome) -> Html:
        """``2043 «Ivan — WhatsApp»``, or the number as typed if the dialog was not found."""
        if outcome.dialog is None:
            return escape(outcome.label)
        return Replies.looked(outcome.dialog)

    @staticmethod
    def looked(dialog: Dialog) -> Html:
        """A dialog Bitrix24 described, for HTML: ``2043 «Ivan — WhatsApp»``."""
        return escape(Replies.label(dialog))

    @staticmethod
    def label(dialog: Dialog) -> str:
        """A dialog as plain text (buttons): ``2043 «Ivan — WhatsApp»``, long names cut."""
        name = " ".join(dialog.name.split())
        if not name:
            return str(dialog.chat_id)
        if len(name) > MAX_NAME:
            name = name[: MAX_NAME - 1].rstrip() + "…"
        return f"{dialog.chat_id} «{name}»"

    # ---- transfer results ---------------------------------------------------------------

    def outcome(self, outcome: Outcome, target: Target | None, lang: Lang) -> Html:
        """One line for one dialog (``target`` is None for a finish)."""
        return self._grouped([self._line(outcome, target, lang)], lang)[0]

    def _line(self, outcome: Outcome, target: Target | None, lang: Lang) -> Html | _Failure:
        """A dialog's line, or its failure, to be told with the others of the same reason."""
        text = self.messages.text
        dialog = self.dialog(outcome)
        if outcome.status is Status.FAILED:
            error = outcome.error
            assert error is not None
            return _Failure(dialog, self.messages.error(error.code, error.status, lang))
        if outcome.status is Status.DUPLICATE:
            return text("result.duplicate", lang, dialog=dialog, token=outcome.ref)
        if outcome.status is Status.NOT_MOVED:
            return self._not_moved(outcome, target, lang)
        if outcome.status is Status.CLOSED:
            key = "result.closed_already" if target is None else "result.closed"
            return text(key, lang, dialog=dialog)
        assert outcome.dialog is not None
        if outcome.status is Status.FINISHED or target is None:
            where = self.whereabouts(outcome.dialog, lang)
            return text("result.finished", lang, dialog=dialog, where=where)
        if outcome.status is Status.ALREADY:
            key = "result.already" if target.kind is Kind.OPERATOR else "result.already_queue"
            return text(key, lang, dialog=dialog, target=self.target(target, lang))
        previous = self.holder(outcome.dialog, lang)
        return text(
            "result.ok", lang, dialog=dialog, previous=previous, target=self.target(target, lang)
        )

    def _not_moved(self, outcome: Outcome, target: Target | None, lang: Lang) -> Html:
        """A transfer or finish the portal took (or may have taken) that did not show."""
        text = self.messages.text
        dialog, after = self.dialog(outcome), outcome.after
        assert after is not None
        where = self.whereabouts(after, lang)
        if target is None:
            return text("result.not_finished", lang, dialog=dialog, where=where)
        if after.finished:
            return text("result.not_moved.finished", lang, dialog=dialog)
        error = outcome.error
        if error is not None:  # the answer was lost or unclear; this is what the look saw
            if error.code in _LOST and error.sent:
                reason = text(
                    "error.suffix", lang, text=text("unclear.lost", lang), code=error.code
                )
            else:
                reason = self.messages.error(error.code, error.status, lang)
            return text("result.unclear", lang, dialog=dialog, where=where, reason=reason)
        key = (
            "result.not_moved.operator"
            if target.kind is Kind.OPERATOR
            else "result.not_moved.queue"
        )
        return text(key, lang, dialog=dialog, where=where, target=self.target(target, lang))

    def transfer(self, outcomes: Sequence[Outcome], target: Target | None, lang: Lang) -> Html:
        """The reply to one ``/transfer`` (or ``/finish``, without a target): a line per
        dialog, except that dialogs failing for the same reason share one line."""
        lines = [self._line(o, target, lang) for o in outcomes]
        return Html("\n".join(self._grouped(lines, lang)))

    def _grouped(self, lines: Iterable[Html | _Failure], lang: Lang) -> list[Html]:
        """``lines`` in order, each reason for failing once, where it first befell a dialog,
        naming every dialog it befell: twenty missing dialogs are one line, not twenty."""
        slots: list[Html | tuple[Html, list[Html]]] = []
        befell: dict[str, list[Html]] = {}
        for line in lines:
            if not isinstance(line, _Failure):
                slots.append(line)
                continue
            dialogs = befell.get(line.reason)
            if dialogs is None:
                dialogs = befell[line.reason] = []
                slots.append((line.reason, dialogs))
            if line.dialog not in dialogs:  # a number typed twice is named once
                dialogs.append(line.dialog)
        return [slot if isinstance(slot, str) else self._failed(*slot, lang) for slot in slots]

    def _failed(self, reason: Html, dialogs: Sequence[Html], lang: Lang) -> Html:
        """``❌ Dialog 9999: reason``, or ``❌ Dialogs 9998, 9999: reason``."""
        if len(dialogs) == 1:
            return self.messages.text("result.failed", lang, dialog=dialogs[0], reason=reason)
        return self.messages.text(
            "result.failed_many", lang, dialogs=Html(", ".join(dialogs)), reason=reason
        )

    def announcement(
        self, outcomes: Sequence[Outcome], target: Target | None, by: str, lang: Lang
    ) -> list[Html]:
        """The team-chat lines for the dialogs that moved or finished (none if none did)."""
        lines: list[Html] = []
        for o in outcomes:
            if o.dialog is None or o.status not in (Status.MOVED, Status.FINISHED):
                continue
            if target is None:
                where = self.whereabouts(o.dialog, lang)
                lines.append(
                    self.messages.text(
                        "announce.finished", lang, dialog=self.dialog(o), where=where, by=by
                    )
                )
            else:
                previous = self.holder(o.dialog, lang)
                lines.append(
                    self.messages.text(
                        "announce",
                        lang,
                        dialog=self.dialog(o),
                        previous=previous,
                        target=self.target(target, lang),
                        by=by,
                    )
                )
        return lines

    # ---- buttons and what they ask ------------------------------------------------------

    def picker(self, dialogs: Sequence[Dialog], lang: Lang) -> Html:
        """The picker's header: the dialog and who holds it, or how many dialogs."""
        if len(dialogs) == 1:
            return self.messages.text(
                "picker.one",
                lang,
                dialog=self.looked(dialogs[0]),
                where=self.whereabouts(dialogs[0], lang),
            )
        return self.messages.text("picker.many", lang, count=len(dialogs))

    def confirm(
        self,
        refs: Sequence[DialogRef],
        looks: Sequence[Dialog | BitrixError],
        target: Target | None,
        lang: Lang,
    ) -> Html:
        """What a confirming tap will do: the question, then a line per dialog (``refs``, as
        named, and ``looks``, each as Bitrix24 shows it), the ones it cannot see grouped."""
        count = sum(1 for look in looks if isinstance(look, Dialog))
        if target is None:
            key = "confirm.finish_one" if count == 1 else "confirm.finish"
            lines = [self.messages.text(key, lang, count=count)]
        else:
            # Russian phrases the kind around the name ("оператору …", "в очередь «…»"), so
            # a raw ID is named as typed, never as a noun the phrase would have to decline
            known = self.directory.name_of(target.kind, target.bitrix_id) is not None
            name = self.target(target, lang) if known else escape(target.ref)
            key = "confirm.transfer_one" if count == 1 else "confirm.transfer"
            if target.kind is Kind.QUEUE:
                key += "_queue"
            lines = [self.messages.text(key, lang, count=count, target=name)]
        lines += self.look_lines(refs, looks, lang)
        return Html("\n".join(lines))

    def look_lines(
        self, refs: Sequence[DialogRef], looks: Sequence[Dialog | BitrixError], lang: Lang
    ) -> list[Html]:
        """A line per dialog as it is now; those that cannot be seen for the same reason
        share one line naming them all."""
        return self._grouped(
            (self._look(ref, look, lang) for ref, look in zip(refs, looks, strict=True)), lang
        )

    def _look(self, ref: DialogRef, look: Dialog | BitrixError, lang: Lang) -> Html | _Failure:
        """``• 2043 «Ivan» · Bob Lee`` for a dialog as it is now, or the failure to see it
        (``❌ Dialog 9999: …``, named as typed)."""
        if isinstance(look, BitrixError):
            return _Failure(escape(str(ref)), self.messages.error(look.code, look.status, lang))
        return self.messages.text(
            "confirm.line", lang, dialog=self.looked(look), holder=self.holder(look, lang)
        )

    @staticmethod
    def button(target: Target, online: bool | None = None) -> str:
        """A target's button label: plain text (Telegram does not parse markup there); an
        operator marked online or offline when that is known."""
        name = target.name if len(target.name) <= 32 else target.name[:31] + "…"
        if target.kind is Kind.QUEUE:
            return f"# {name}"
        if online is None:
            return name
        return f"{ONLINE if online else OFFLINE} {name}"

    def offline(
        self,
        refs: Sequence[DialogRef],
        looks: Sequence[Dialog | BitrixError],
        target: Target,
        lang: Lang,
    ) -> Html:
        """The question before a transfer to an operator who is offline: "Bob Lee is
        offline. Transfer dialog 2043 «…» anyway?", or for several dialogs, a line each."""
        seen = [look for look in looks if isinstance(look, Dialog)]
        name = self.target(target, lang)
        if len(seen) == 1:  # and why the others cannot be seen, if there are others
            dialog = self.looked(seen[0])
            lines = [self.messages.text("offline.one", lang, target=name, dialog=dialog)]
            others = [
                (ref, look) for ref, look in zip(refs, looks, strict=True) if look is not seen[0]
            ]
            lines += self.look_lines([r for r, _ in others], [look for _, look in others], lang)
        else:
            lines = [self.messages.text("offline.many", lang, target=name, count=len(seen))]
            lines += self.look_lines(refs, looks, lang)
        return Html("\n".join(lines))

    def offline_note(self, target: Target, lang: Lang) -> Html:
        """ "Bob Lee is offline.", said above a confirmation that asks anyway."""
        return self.messages.text("offline.note", lang, target=self.target(target, lang))

    # ---- bad input ----------------------------------------------------------------------

    def example(self) -> str:
        """A real example command from this team's directory."""
        if self.directory.operators:
            return f"/transfer 2043 {self.directory.spelling(self.directory.operators[0])}"
        if self.directory.queues:
            return f"/transfer 2043 {self.directory.spelling(self.directory.queues[0])}"
        return "/transfer 2043 user:15"

    def usage(
        self,
        lang: Lang,
        error: UsageError | None = None,
        command: Literal["transfer", "finish"] = "transfer",
    ) -> Html:
        """What was wrong (if anything), then ``command``'s usage with an example."""
        text = self.messages.text
        if command == "finish":
            usage = text("usage.finish.form", lang)
        else:
            usage = text("usage", lang, example=self.example())
        if error is None:
            return usage
        key = f"usage.{error.reason}"
        params: dict[str, object] = {"token": quoted(error.token or "")}
        if error.reason == "too_many":
            params = {"limit": error.token or ""}
        elif error.reason == "bad_target" and error.dialogs:
            key, params["dialogs"] = "usage.bad_target.after", self.dialog_list(error.dialogs)
        return Html(f"{text(key, lang, **params)}\n{usage}")

    def misread(self, dialogs: Sequence[DialogRef], error: Misread, lang: Lang) -> Html:
        """What was understood, and the word that was not: "2043 → Bob Lee: «please»?"."""
        params: dict[str, object] = {
            "dialogs": self.dialog_list(dialogs),
            "target": self.target(error.target, lang),
        }
        if error.second is not None:
            line = self.messages.text(
                "usage.two_targets", lang, second=self.target(error.second, lang), **params
            )
        else:
            line = self.messages.text("usage.misread", lang, word=quoted(error.word), **params)
        return Html(f"{line}\n{self.usage(lang)}")

    @staticmethod
    def dialog_list(dialogs: Sequence[DialogRef], shown: int = 3) -> str:
        """Dialogs as typed, a few of them: ``2043, s3567`` or ``2043, 2044, 2045 …``."""
        listed = ", ".join(str(ref) for ref in dialogs[:shown])
        return f"{listed} …" if len(dialogs) > shown else listed

    def unknown_command(self, command: str, lang: Lang) -> Html:
        """A command the bot does not have: "did you mean", and the commands it has."""
        guess = closest_command(command)
        word = quoted(command)
        if guess is not None:
            line = self.messages.text("unknown_command.guess", lang, command=word, guess=guess)
        else:
            line = self.messages.text("unknown_command", lang, command=word)
        return Html(f"{line}\n{self.messages.text('unknown_command.list', lang)}")

    def unresolved(self, error: ResolveError, lang: Lang) -> Html:
        """ "Did you mean", "fits several", or "not a name" for a target word."""
        text = self.messages.text
        if isinstance(error, AmbiguousName):  # one line: the names are on the buttons, paged
            people = all(t.kind is Kind.OPERATOR for t in error.candidates)
            return text(
                "ambiguous_name" if people else "ambiguous_name.mixed",
                lang,
                token=quoted(error.token),
                count=len(error.candidates),
            )
        spelled = [
            Html(f"<code>{escape(self.directory.spelling(t))}</code> ({escape(t.name)})")
            for t in error.candidates
        ]
        joined = Html(text("or", lang).join(spelled))
        if isinstance(error, UnknownName):
            if spelled:
                return text("unknown_name", lang, token=quoted(error.token), suggestions=joined)
            return text("unknown_name.none", lang, token=quoted(error.token))
        return Html(
            f"{text('usage.bad_target', lang, token=quoted(error.token))}\n{self.usage(lang)}"
        )

    def audit_line(
        self,
        entry: AuditEntry,
        who: str | None,
        lang: Lang,
        zone: tzinfo = UTC,
        looked: Dialog | None = None,
    ) -> Html:
        """One audit entry, compactly: when (in the team's ``zone``, named), which dialog
        (with its name when ``looked``), where to, how it ended in words, and by whom."""
        when = entry.time if entry.time.tzinfo else entry.time.replace(tzinfo=UTC)
        local = when.astimezone(zone)
        params: dict[str, object] = {
            "time": f"{local:%d.%m %H:%M} {local.tzname() or ''}".rstrip(),
            "dialog": self.looked(looked) if looked is not None else entry.dialog,
            "outcome": self._ending(entry, lang),
            "by": who or entry.user_id,
        }
        kind, _, number = entry.target.partition(":")
        if not number.isdigit():  # a finish, or a command whose target was never known
            return self.messages.text("history.line.no_target", lang, **params)
        found = self.directory.by_id(Kind.OPERATOR if kind == "user" else Kind.QUEUE, int(number))
        return self.messages.text("history.line", lang, target=self.target(found, lang), **params)

    def _ending(self, entry: AuditEntry, lang: Lang) -> Html:
        """How an audit entry ended, in words: "moved", "no such dialog"; else its code."""
        text, finish = self.messages.text, entry.action == "finish"
        if entry.outcome == "ok":
            return text("history.finished" if finish else "history.moved", lang)
        if entry.outcome == "NOT_MOVED":
            return text("history.not_finished" if finish else "history.not_moved", lang)
        key = _ENDINGS.get(entry.outcome)
        if key is None:
            return text("history.error", lang, code=entry.outcome)
        return text(key, lang)

    def history_usage(self, lang: Lang, problem: Literal["many"] | BadTarget | None = None) -> Html:
        """The /history usage, after what was wrong: more than one dialog or name, or a
        word that cannot be a name."""
        usage = self.messages.text("history.usage", lang)
        if problem is None:
            return usage
        if isinstance(problem, BadTarget):
            said = self.messages.text("usage.bad_target", lang, token=quoted(problem.token))
        else:
            said = self.messages.text("history.one_at_a_time", lang)
        return Html(f"{said}\n{usage}")

    # ---- help and listings --------------------------------------------------------------

    def help(self, lang: Lang) -> Html:
        """/help with this team's own names in the examples."""
        ops, queues = self.directory.operators, self.directory.queues
        return self.messages.text(
            "help",
            lang,
            operator=ops[0].key if ops and ops[0].key else "anna",
            queue=queues[0].key if queues and queues[0].key else "support",
        )

    def listing(self, kind: Kind, lang: Lang, search: str | None = None) -> Html:
        """/operators or /queues: a compact line per entry with every name that works;
        ``search`` keeps the entries whose names contain it. Long lists are cut short."""
        entries = self.directory.operators if kind is Kind.OPERATOR else self.directory.queues
        title = self.messages.text(
            "operators.title" if kind is Kind.OPERATOR else "queues.title", lang
        )
        needle = (search or "").strip().lower().lstrip("@#")
        if needle:
            entries = tuple(
                entry
                for entry in entries
                if needle in entry.name.lower()
                or any(needle in name.lower() for name in self.directory.spellings(entry))
            )
        if not entries:
            return Html(f"{title}\n{self.messages.text('directory.empty', lang)}")
        lines: list[str] = [title]
        ordered = sorted(entries, key=lambda t: t.name.lower())
        for entry in ordered[:MAX_LISTED]:
            names = self.directory.spellings(entry)
            spelled = " ".join(f"<code>{escape(n)}</code>" for n in names)
            lines.append(f"{spelled} — {escape(entry.name)} · {escape(entry.bitrix_id)}")
        if len(ordered) > MAX_LISTED:
            command = "/operators" if kind is Kind.OPERATOR else "/queues"
            lines.append(
                self.messages.text(
                    "directory.more", lang, count=len(ordered) - MAX_LISTED, command=command
                )
            )
        return Html("\n".join(lines))
