"""Tests of the bot's texts: the Bitrix24 error table, both languages, overrides, escaping, HTML."""

from __future__ import annotations

import html
import re
import string
from html.parser import HTMLParser

import pytest

from bot.bitrix24.codes import KNOWN_CODES
from bot.config import parse_config
from bot.messages import CATALOG, LANGS, Html, Lang, Messages, escape, pick_language

# Bitrix24's documented error codes (per method and system-wide) and the client's own codes.
# Written out literally: this list is the contract, not something read from the product.
TRANSFER = "imopenlines.operator.transfer"
DIALOG_GET = "imopenlines.dialog.get"
FINISH = "imopenlines.operator.another.finish"

METHOD_CODES: list[tuple[str, int, str]] = [
    ("CHAT_ID_EMPTY", 400, TRANSFER),
    ("USER_ID_EMPTY", 400, TRANSFER),
    ("QUEUE_ID_EMPTY", 400, TRANSFER),
    ("TRANSFER_ID_EMPTY", 400, TRANSFER),
    ("OPERATOR_WRONG", 400, TRANSFER),
    ("ACCESS_ERROR", 400, DIALOG_GET),
    ("IM_NOT_INSTALLED", 400, DIALOG_GET),
    ("CHAT_ID", 400, FINISH),
    ("CHAT_TYPE", 400, FINISH),
    ("ACCESS_DENIED", 400, FINISH),
    ("USER_ID", 400, FINISH),
]
SYSTEM_CODES: list[tuple[str, int]] = [
    ("QUERY_LIMIT_EXCEEDED", 503),
    ("OPERATION_TIME_LIMIT", 429),
    ("OVERLOAD_LIMIT", 503),
    ("INTERNAL_SERVER_ERROR", 500),
    ("ERROR_UNEXPECTED_ANSWER", 500),
    ("PORTAL_DELETED", 500),
    ("NO_AUTH_FOUND", 401),
    ("expired_token", 401),
    ("INVALID_CREDENTIALS", 403),
    ("insufficient_scope", 403),
    ("user_access_error", 403),
    ("ACCESS_DENIED", 403),
    ("INVALID_REQUEST", 400),
    ("ERROR_BATCH_LENGTH_EXCEEDED", 400),
    ("ERROR_BATCH_METHOD_NOT_ALLOWED", 405),
    ("ERROR_METHOD_NOT_FOUND", 404),
    ("ERROR_MANIFEST_IS_NOT_AVAILABLE", 404),
]
CLIENT_CODES: list[str] = ["NETWORK_ERROR", "TIMEOUT", "BAD_RESPONSE"]

ALL_CODES: list[tuple[str, int | None]] = [
    *((code, status) for code, status, _ in METHOD_CODES),
    *SYSTEM_CODES,
    *((code, None) for code in CLIENT_CODES),
]

CYRILLIC = re.compile(r"[А-Яа-яЁё]")
NASTY = "<b>&"
NASTY_ESCAPED = "&lt;b&gt;&amp;"


def table_entries(code: str) -> list[tuple[int | None, str]]:
    """(status, method) of every entry the product's table has for ``code``."""
    return [(k.status, k.method) for k in KNOWN_CODES if k.code == code]


def description(code: str, status: int | None) -> str | None:
    for entry in KNOWN_CODES:
        if entry.code == code and entry.status == status:
            return entry.description
    return None


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


# ---- the code table covers the documentation --------------------------------------------


@pytest.mark.parametrize(("code", "status", "method"), METHOD_CODES)
def test_method_code_is_in_the_table(code: str, status: int, method: str) -> None:
    assert (status, method) in table_entries(code)


@pytest.mark.parametrize(("code", "status"), SYSTEM_CODES)
def test_system_code_is_in_the_table_with_its_status(code: str, status: int) -> None:
    assert status in [s for s, _ in table_entries(code)]


@pytest.mark.parametrize("code", CLIENT_CODES)
def test_client_code_is_in_the_table(code: str) -> None:
    assert table_entries(code)


def test_codes_are_case_sensitive() -> None:
    assert table_entries("expired_token")
    assert not table_entries("EXPIRED_TOKEN")
    generic = Messages().error("EXPIRED_TOKEN", 401, "en")
    assert generic != Messages().error("expired_token", 401, "en")


# ---- every code has its own text in both languages ----------------------------------------


def friendly_part(rendered: str, code: str, lang: Lang) -> str:
    """The friendly text of a rendered error; asserts the raw code is shown at its very end."""
    plain = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    assert re.search(re.escape(code) + r"\W*$", plain), f"no {code} at the end of {rendered!r}"
    # whatever markup the product puts around the code, it is the same for every code
    suffix = Messages().text("error.suffix", lang, text="", code=code).strip()
    assert suffix and rendered.endswith(suffix)
    return rendered.removesuffix(suffix).strip()


def unknown_text(code: str, status: int | None, lang: Lang) -> str:
    unheard = f"UNHEARD_OF_{code}"
    return friendly_part(Messages().error(unheard, status, lang), unheard, lang)


@pytest.mark.parametrize(("code", "status"), ALL_CODES)
@pytest.mark.parametrize("lang", LANGS)
def test_error_text(code: str, status: int | None, lang: Lang) -> None:
    text = friendly_part(Messages().error(code, status, lang), code, lang)
    assert text
    assert "{" not in text, "no unfilled placeholder"
    assert text != unknown_text(code, status, lang), "a known code gets its own text"
    raw = description(code, status)
    if raw is not None:
        assert raw.lower() not in text.lower(), "not Bitrix24's raw description"
    if lang == "ru":
        assert CYRILLIC.search(text)
    else:
        assert not CYRILLIC.search(text)


@pytest.mark.parametrize(("code", "status"), ALL_CODES)
def test_english_and_russian_texts_differ(code: str, status: int | None) -> None:
    assert Messages().error(code, status, "en") != Messages().error(code, status, "ru")


@pytest.mark.parametrize("lang", LANGS)
def test_access_denied_means_two_things(lang: Lang) -> None:
    dialog = friendly_part(Messages().error("ACCESS_DENIED", 400, lang), "ACCESS_DENIED", lang)
    plan = friendly_part(Messages().error("ACCESS_DENIED", 403, lang), "ACCESS_DENIED", lang)
    assert dialog != plan


@pytest.mark.parametrize("lang", LANGS)
def test_unknown_code_gets_a_generic_text_that_shows_the_code(lang: Lang) -> None:
    messages = Messages(admin_contact="@it_ops")
    text = friendly_part(messages.error("SOMETHING_NEW", 418, lang), "SOMETHING_NEW", lang)
    assert text
    assert "@it_ops" in text
    other = friendly_part(messages.error("ANOTHER_NEW", None, lang), "ANOTHER_NEW", lang)
    assert other == text


def test_unknown_code_is_escaped() -> None:
    rendered = Messages().error(NASTY, 400, "en")
    assert NASTY not in rendered
    assert NASTY_ESCAPED in rendered
    friendly_part(rendered, NASTY, "en")


# ---- who to tell ------------------------------------------------------------------------

ADMIN_CODES = [("NO_AUTH_FOUND", 401), ("insufficient_scope", 403)]


@pytest.mark.parametrize(("code", "status"), ADMIN_CODES)
@pytest.mark.parametrize("lang", LANGS)
def test_admin_contact_is_named_in_admin_texts(code: str, status: int, lang: Lang) -> None:
    assert "@it_ops" in Messages(admin_contact="@it_ops").error(code, status, lang)


@pytest.mark.parametrize(("code", "status"), ADMIN_CODES)
@pytest.mark.parametrize(
    ("lang", "default"), [("en", "the bot's admin"), ("ru", "администратору бота")]
)
def test_default_admin_wording(code: str, status: int, lang: Lang, default: str) -> None:
    rendered = Messages().error(code, status, lang)
    assert default in rendered
    assert "{admin}" not in rendered


def test_admin_contact_is_escaped() -> None:
    rendered = Messages(admin_contact=NASTY).error("NO_AUTH_FOUND", 401, "en")
    assert NASTY_ESCAPED in rendered
    assert NASTY not in rendered


def test_default_admin_wording_is_grammatical_in_russian() -> None:
    # "Попросите <кого?>" needs the accusative: "администратора", not "администратору"
    messages = Messages()
    bad = []
    for key, (en, _) in CATALOG.items():
        params = {name: "x" for name in fields(en) if name != "admin"}
        rendered = messages.text(key, "ru", **params)
        if "Попросите администратору" in rendered:
            bad.append(key)
    assert bad == []


# ---- overrides --------------------------------------------------------------------------


def test_override_replaces_one_language_only() -> None:
    messages = Messages({"en": {"error.OPERATOR_WRONG": "Nope, {admin} says no."}}, "@ops")
    rendered = messages.error("OPERATOR_WRONG", 400, "en")
    assert friendly_part(rendered, "OPERATOR_WRONG", "en") == "Nope, @ops says no."
    assert messages.error("OPERATOR_WRONG", 400, "ru") == Messages().error(
        "OPERATOR_WRONG", 400, "ru"
    )


def test_override_from_config_file() -> None:
    config = parse_config(
        "admin_contact: '@ops'\n"
        "messages:\n"
        "  ru:\n"
        "    result.ok: 'Готово: {dialog} → {target}'\n"
        "    error.TIMEOUT: 'Портал молчит, зовите {admin}'\n",
        {},
    )
    messages = Messages(config.messages, config.admin_contact)
    assert messages.text("result.ok", "ru", dialog=2043, previous="x", target="Анна") == (
        "Готово: 2043 → Анна"
    )
    rendered = messages.error("TIMEOUT", None, "ru")
    assert friendly_part(rendered, "TIMEOUT", "ru") == "Портал молчит, зовите @ops"
    assert messages.text("result.ok", "en", dialog=2043, previous="Bob", target="Anna") == (
        "✅ Dialog 2043: Bob → Anna"
    )


def test_overridden_templates_escape_values_too() -> None:
    messages = Messages({"en": {"result.ok": "{dialog} to {target}"}})
    assert messages.text("result.ok", "en", dialog=NASTY, target="a&b", previous="") == (
        f"{NASTY_ESCAPED} to a&amp;b"
    )


# ---- escaping ---------------------------------------------------------------------------

TEMPLATES_WITH_PARAMS = sorted(
    key for key, (en, ru) in CATALOG.items() if (fields(en) | fields(ru)) - {"admin"}
)


def test_there_are_templates_with_params() -> None:
    assert {"result.ok", "unknown_name", "usage.bad_dialog"} <= set(TEMPLATES_WITH_PARAMS)


@pytest.mark.parametrize("key", TEMPLATES_WITH_PARAMS)
@pytest.mark.parametrize("lang", LANGS)
def test_every_param_is_escaped(key: str, lang: Lang) -> None:
    template = Messages().template(key, lang)
    params = {name: NASTY for name in fields(template) if name != "admin"}
    rendered = Messages().text(key, lang, **params)
    assert NASTY not in rendered
    assert rendered.count(NASTY_ESCAPED) == sum(
        1 for _, name, _, _ in string.Formatter().parse(template) if name in params
    )


@pytest.mark.parametrize(
    ("key", "params", "expected"),
    [
        (
            "result.ok",
            {"dialog": "2043 «<b>&»", "previous": "Bob & Co", "target": "<i>Anna</i>"},
            "✅ Dialog 2043 «&lt;b&gt;&amp;»: Bob &amp; Co → &lt;i&gt;Anna&lt;/i&gt;",
        ),
        (
            "unknown_name",
            {"token": "@<script>", "suggestions": "<code>@anna</code>"},
            "I don't know «@&lt;script&gt;». Did you mean &lt;code&gt;@anna&lt;/code&gt;?",
        ),
    ],
)
def test_escaping_examples(key: str, params: dict[str, str], expected: str) -> None:
    assert Messages().text(key, "en", **params) == expected


def test_html_values_are_not_escaped_twice() -> None:
    suggestions = Html("<code>@anna</code>")
    rendered = Messages().text("unknown_name", "en", token="@ana", suggestions=suggestions)
    assert rendered == "I don't know «@ana». Did you mean <code>@anna</code>?"
    assert escape(escape(NASTY)) == NASTY_ESCAPED


# ---- every template renders as well-formed Telegram HTML -----------------------------------

TELEGRAM_TAGS = {"b", "i", "code", "pre", "a"}
ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


class TagChecker(HTMLParser):
    """Collects problems: tags Telegram does not support, unbalanced or badly nested tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.problems.append(f"unsupported <{tag}>")
        if tag == "a" and [name for name, _ in attrs] != ["href"]:
            self.problems.append("<a> without exactly one href")
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")


def html_problems(text: str) -> list[str]:
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    problems = checker.problems + [f"unclosed <{tag}>" for tag in checker.stack]
    stray = ENTITY.sub("", text)
    if "&" in stray:
        problems.append("bare &")
    if "<" in re.sub(r"</?[a-z]+(?: [^<>]*)?>", "", stray):
        problems.append("bare <")
    return problems


def test_html_checker_catches_bad_markup() -> None:
    assert html_problems("<b>ok</b> <code>x</code> &lt; &amp;") == []
    assert html_problems("<b>open") == ["unclosed <b>"]
    assert html_problems("<b><i>x</b></i>") != []
    assert html_problems("<div>x</div>") == ["unsupported <div>"]
    assert html_problems("a & b") == ["bare &"]


@pytest.mark.parametrize("key", sorted(CATALOG))
@pytest.mark.parametrize("lang", LANGS)
def test_every_template_renders_well_formed_html(key: str, lang: Lang) -> None:
    en, ru = CATALOG[key]
    params = {name: "Value" for name in fields(en) | fields(ru) if name != "admin"}
    rendered = Messages().text(key, lang, **params)
    assert rendered.strip()
    assert "{" not in rendered and "}" not in rendered
    assert html_problems(rendered) == []


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_both_languages_use_the_same_placeholders(key: str) -> None:
    en, ru = CATALOG[key]
    assert fields(en) == fields(ru)


# templates with no words of their own, only markup around placeholders
WORDLESS = {"error.suffix", "confirm.line", "history.line", "history.line.no_target"}


@pytest.mark.parametrize("key", sorted(set(CATALOG) - WORDLESS))
def test_russian_templates_are_in_russian(key: str) -> None:
    en, ru = CATALOG[key]
    assert en.strip()
    assert CYRILLIC.search(ru)
    assert not CYRILLIC.search(en)


# ---- language choice --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "user_language", "expected"),
    [
        ("auto", None, "en"),
        ("auto", "", "en"),
        ("auto", "en", "en"),
        ("auto", "en-US", "en"),
        ("auto", "de", "en"),
        ("auto", "ru", "ru"),
        ("auto", "ru-RU", "ru"),
        ("auto", "RU", "ru"),
        ("en", "ru", "en"),
        ("ru", "en", "ru"),
        ("ru", None, "ru"),
    ],
)
def test_pick_language(setting: str, user_language: str | None, expected: str) -> None:
    assert pick_language(setting, user_language) == expected


# ---- Russian never declines a name ----------------------------------------------------------

# placeholders that hold a person's, a queue's or a dialog's name as the directory spells it
# (any language, indeclinable here): Russian phrases the case around them with a noun
NAMES = {"target", "previous", "holder", "name", "by", "token", "word", "candidates"}
# what may stand right before a name: a noun that carries the case, a quote, a bracket,
# punctuation, an arrow, or a verb whose subject the name is
BEFORE_A_NAME = re.compile(
    r"(?:^\W*|[«(:→—,;·]|\n|оператора|оператору|оператор|очереди|очередь|пользователя"
    r"|передал\(а\)|завершил\(а\)|Возможно,)\s*$",
    re.IGNORECASE,
)


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_russian_puts_a_case_carrying_word_before_every_name(key: str) -> None:
    ru = CATALOG[key][1]
    for before, name, _, _ in string.Formatter().parse(ru):
        if name in NAMES:
            assert BEFORE_A_NAME.search(before), f"{key}: «…{before[-20:]}{{{name}}}»"


@pytest.mark.parametrize(
    "ru",
    [
        "Передать {target} диалоги?",  # the dative would fall on the name
        "сейчас у {holder}.",
        "(был у {previous})",
        "О {word} ничего не записано.",
    ],
)
def test_the_case_check_catches_a_declined_name(ru: str) -> None:
    befores = [b for b, name, _, _ in string.Formatter().parse(ru) if name in NAMES]
    assert not all(BEFORE_A_NAME.search(b) for b in befores)
