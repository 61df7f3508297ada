"""Tests of config loading: the sample, interpolation, every kind of bad file, secrets, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest

from bot.config import Config, ConfigError, interpolate, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "config.yaml"

# Distinctive fake secrets: if any of these shows up in an error text or a repr, it leaked.
FAKE_CODE = "zq9FAKEhookCODE7x"
FAKE_WEBHOOK = f"https://portal.example.com/rest/1/{FAKE_CODE}/"
FAKE_TOKEN_SECRET = "FAKEtokenFAKEtokenFAKE_zz"
FAKE_TOKEN = f"987654321:{FAKE_TOKEN_SECRET}"
FAKE_API_URL = "http://127.0.0.1:8081"

SECRET_ENV = {
    "TELEGRAM_BOT_TOKEN": FAKE_TOKEN,
    "BITRIX24_WEBHOOK_URL": FAKE_WEBHOOK,
    "TELEGRAM_API_URL": FAKE_API_URL,
}

UNIQUE = "every key, alias and username must be unique"


def yaml(text: str) -> str:
    """A YAML document written indented in the test; line 1 is the first line after the quotes."""
    return dedent(text)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problem lines a bad config produces, exactly as the user reads them."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, env or {})
    return [str(p) for p in info.value.problems]


def config_error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env or {})
    return info.value


# ---- the sample config ------------------------------------------------------------------


def test_sample_config_validates_without_env() -> None:
    config = load_config(SAMPLE, env={})

    assert [(o.key, o.bitrix_id, o.name) for o in config.operators] == [
        ("anna", 15, "Anna Smirnova"),
        ("bob", 16, "Bob Lee"),
        ("kate", 29, "Kate Roy"),
    ]
    assert config.operators[0].aliases == ("anya",)
    assert config.operators[0].telegram == "anna_s"
    assert [(q.key, q.bitrix_id, q.aliases) for q in config.queues] == [("support", 3, ("sup",))]
    assert [(s.id, s.name) for s in config.supervisors] == [(111111111, "Olga")]
    assert [c.id for c in config.chats] == [-1001234567890]
    assert config.announce_to == -1001234567890
    assert config.admin_contact == "@it_ops"
    assert config.language == "auto"
    assert config.dialog_numbers == "chat"
    assert config.bitrix24.timeout_s == 10
    # the ${...} placeholders resolve to nothing: the secrets are simply not set yet
    assert config.telegram.token is None
    assert config.telegram.api_url is None
    assert config.bitrix24.webhook_url is None


def test_sample_config_takes_secrets_from_env() -> None:
    config = load_config(SAMPLE, env=SECRET_ENV)

    assert config.telegram.token is not None
    assert config.telegram.token.get_secret_value() == FAKE_TOKEN
    assert config.bitrix24.webhook_url is not None
    assert config.bitrix24.webhook_url.get_secret_value() == FAKE_WEBHOOK
    assert config.telegram.api_url == FAKE_API_URL
    assert config.missing_secrets() == []


def test_env_wins_over_values_written_in_the_file() -> None:
    text = yaml(
        """\
        bitrix24:
          webhook_url: https://file.example.com/rest/7/filecode/
        telegram:
          token: 111:fileTOKENfileTOKENfileTOKEN
          api_url: https://file-bot-api.example.com
        """
    )
    from_file = parse_config(text, {})
    assert from_file.telegram.token is not None
    assert from_file.telegram.token.get_secret_value() == "111:fileTOKENfileTOKENfileTOKEN"

    config = parse_config(text, SECRET_ENV)
    assert config.telegram.token is not None
    assert config.telegram.token.get_secret_value() == FAKE_TOKEN
    assert config.bitrix24.webhook_url is not None
    assert config.bitrix24.webhook_url.get_secret_value() == FAKE_WEBHOOK
    assert config.telegram.api_url == FAKE_API_URL


def test_empty_env_var_does_not_override_the_file() -> None:
    text = "telegram:\n  token: 111:fileTOKENfileTOKENfileTOKEN\n"
    config = parse_config(text, {"TELEGRAM_BOT_TOKEN": ""})
    assert config.telegram.token is not None
    assert config.telegram.token.get_secret_value() == "111:fileTOKENfileTOKENfileTOKEN"


def test_env_vars_fill_sections_missing_from_the_file() -> None:
    config = parse_config("language: en\n", SECRET_ENV)
    assert config.telegram.token is not None
    assert config.bitrix24.masked_webhook() == "https://portal.example.com/rest/1/***/"


# ---- interpolation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${NAME}", {"NAME": "Olga"}, "Olga"),
        ("hi ${NAME}!", {"NAME": "Olga"}, "hi Olga!"),
        ("${NAME}", {}, ""),
        ("${NAME:-Anna}", {}, "Anna"),
        ("${NAME:-Anna}", {"NAME": ""}, "Anna"),
        ("${NAME:-Anna}", {"NAME": "Olga"}, "Olga"),
        ("${NAME:-}", {}, ""),
        ("$$5", {}, "$5"),
        ("$${NAME}", {"NAME": "Olga"}, "${NAME}"),
        ("a $ b", {}, "a $ b"),
        ("${A}${B:-2}", {"A": "1"}, "12"),
    ],
)
def test_interpolate(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_interpolated_values_are_not_interpolated_again() -> None:
    assert interpolate("${A}", {"A": "${B}", "B": "no"}) == "${B}"


def test_interpolation_applies_inside_the_config() -> None:
    text = yaml(
        """\
        admin_contact: "${ADMIN:-@helpdesk} pays $$5"
        operators:
          - key: anna
            bitrix_id: ${ANNA_ID}
            name: ${ANNA_NAME:-Anna Default}
        """
    )
    config = parse_config(text, {"ANNA_ID": "15"})
    assert config.admin_contact == "@helpdesk pays $5"
    assert config.operators[0].bitrix_id == 15
    assert config.operators[0].name == "Anna Default"

    config = parse_config(text, {"ANNA_ID": "15", "ADMIN": "@ops", "ANNA_NAME": "Anna S"})
    assert config.admin_contact == "@ops pays $5"
    assert config.operators[0].name == "Anna S"


def test_interpolated_bad_value_is_reported_at_its_key() -> None:
    text = "operators:\n  - key: anna\n    bitrix_id: ${ANNA_ID}\n    name: Anna\n"
    assert problems(text, {"ANNA_ID": "0"}) == [
        "operators[0].bitrix_id (line 3): must be a positive integer"
    ]


# ---- bad files: one line each, naming the key path and the line ---------------------------


def test_empty_file() -> None:
    assert problems("") == ["(top level): the file is empty; start from the sample config.yaml"]


def test_file_with_only_comments() -> None:
    assert problems("# nothing here\n\n# yet\n") == [
        "(top level): the file is empty; start from the sample config.yaml"
    ]


@pytest.mark.parametrize("text", ["- bitrix24\n- telegram\n", "just a sentence\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert problems(text) == [
        "(top level) (line 1): must be a YAML mapping of sections (bitrix24:, telegram:, ...)"
    ]


def test_top_level_list_reports_the_line_where_it_starts() -> None:
    text = "# handoff bot config\n# (a header comment, as in the sample)\n- bitrix24\n- telegram\n"
    assert problems(text) == [
        "(top level) (line 3): must be a YAML mapping of sections (bitrix24:, telegram:, ...)"
    ]


def test_invalid_yaml_syntax_reports_the_line() -> None:
    text = yaml(
        """\
        language: en
        operators: [anna, bob
        queues: []
        """
    )
    lines = problems(text)
    assert len(lines) == 1
    assert lines[0].startswith("(top level) (line 3): not valid YAML: ")


def test_tab_indentation_is_a_syntax_error_with_its_line() -> None:
    lines = problems("language: en\nbitrix24:\n\ttimeout_s: 5\n")
    assert len(lines) == 1
    assert lines[0].startswith("(top level) (line 3): not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "language: en\nlanguag: ru\n",
            "languag (line 2): unknown key (a typo?); did you mean 'language'?",
            id="top-level-typo",
        ),
        pytest.param(
            "bitrix24:\n  timeout_s: 5\n  timout_s: 5\n",
            "bitrix24.timout_s (line 3): unknown key (a typo?); did you mean 'timeout_s'?",
            id="nested-typo",
        ),
        pytest.param(
            "operators:\n  - {key: anna, bitrix_id: 15, nmae: Anna}\n",
            "operators[0].nmae (line 2): unknown key (a typo?); did you mean 'name'?",
            id="typo-in-list-entry",
        ),
    ],
)
def test_unknown_key_with_suggestion(text: str, expected: str) -> None:
    lines = problems(text)
    assert expected in lines


def test_unknown_key_without_anything_close() -> None:
    assert problems("zzzzzz: 1\n") == ["zzzzzz (line 1): unknown key (a typo?)"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "'abc'"])
def test_bitrix_id_must_be_a_positive_integer(value: str) -> None:
    text = f"operators:\n  - key: anna\n    bitrix_id: {value}\n    name: Anna\n"
    assert problems(text) == ["operators[0].bitrix_id (line 3): must be a positive integer"]


def test_queue_bitrix_id_must_be_a_positive_integer() -> None:
    text = "queues:\n  - {key: support, bitrix_id: 0, name: Support}\n"
    assert problems(text) == ["queues[0].bitrix_id (line 2): must be a positive integer"]


def test_missing_name() -> None:
    text = yaml(
        """\
        operators:
          - {key: anna, bitrix_id: 15, name: Anna}
          - {key: bob, bitrix_id: 16}
        """
    )
    assert problems(text) == ["operators[1].name (line 3): is required"]


def test_missing_key_and_bitrix_id_each_get_a_line() -> None:
    assert problems("queues:\n  - name: Support\n") == [
        "queues[0].key (line 2): is required",
        "queues[0].bitrix_id (line 2): is required",
    ]


def test_duplicate_yaml_key_in_one_mapping() -> None:
    text = "language: en\nadmin_contact: '@ops'\nlanguage: ru\n"
    assert problems(text) == ["language (line 3): key 'language' appears twice in the same section"]


def test_duplicate_yaml_key_inside_an_entry() -> None:
    text = "operators:\n  - key: anna\n    bitrix_id: 15\n    key: bob\n    name: Anna\n"
    assert problems(text) == [
        "operators[0].key (line 4): key 'key' appears twice in the same section"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: anna, bitrix_id: 15, name: Anna}
                  - {key: ANNA, bitrix_id: 16, name: Anna Two}
                """
            ),
            f"operators[1].key (line 3): 'ANNA' is already used by operators[0].key: {UNIQUE}",
            id="operator-keys-differ-in-case",
        ),
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: anna, bitrix_id: 15, name: Anna, aliases: [helper]}
                queues:
                  - {key: support, bitrix_id: 3, name: Support, aliases: [Helper]}
                """
            ),
            f"queues[0].aliases[0] (line 4): 'Helper' is already used by operators[0].aliases[0]: "
            f"{UNIQUE}",
            id="alias-shared-by-operator-and-queue",
        ),
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: support, bitrix_id: 15, name: Anna}
                queues:
                  - {key: support, bitrix_id: 3, name: Support}
                """
            ),
            f"queues[0].key (line 4): 'support' is already used by operators[0].key: {UNIQUE}",
            id="operator-key-equals-queue-key",
        ),
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: anna, bitrix_id: 15, name: Anna}
                  - {key: bob, bitrix_id: 16, name: Bob, telegram: "@Anna"}
                """
            ),
            f"operators[1].telegram (line 3): 'Anna' is already used by operators[0].key: {UNIQUE}",
            id="telegram-username-equals-another-operators-key",
        ),
    ],
)
def test_names_must_be_unique_across_operators_and_queues(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# ---- names in any script ----------------------------------------------------------------


def test_keys_and_aliases_may_be_cyrillic() -> None:
    text = yaml(
        """\
        operators:
          - {key: елена, bitrix_id: 15, name: Елена Ёлкина, aliases: [ёлкина, lena]}
        queues:
          - {key: поддержка, bitrix_id: 3, name: Поддержка}
        """
    )
    config = parse_config(text, {})
    assert config.operators[0].key == "елена"
    assert config.operators[0].aliases == ("ёлкина", "lena")
    assert config.queues[0].key == "поддержка"


@pytest.mark.parametrize("key", ["1anna", "_anna", "-anna", "анна смирнова", "анна!", "@анна"])
def test_a_key_still_starts_with_a_letter_and_has_no_spaces(key: str) -> None:
    text = f"operators:\n  - {{key: '{key}', bitrix_id: 15, name: Anna}}\n"
    assert problems(text) == [
        "operators[0].key (line 2): "
        "must start with a letter and use only letters, digits, _ . - (no spaces)"
    ]


def test_telegram_usernames_stay_latin() -> None:
    text = "operators:\n  - {key: anna, bitrix_id: 15, name: Anna, telegram: анна_смирнова}\n"
    [problem] = problems(text)
    assert problem.startswith("operators[0].telegram (line 2): ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: anna, bitrix_id: 15, name: Anna Smirnova}
                  - {key: bob, bitrix_id: 16, name: Bob Lee, aliases: [анна]}
                """
            ),
            "operators[1].aliases[0] (line 3): 'анна' is already used by operators[0].key "
            f"('anna'): {UNIQUE}",
            id="latin-key-cyrillic-alias",
        ),
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: елкин, bitrix_id: 15, name: Пётр Ёлкин}
                  - {key: elkin, bitrix_id: 16, name: Pavel Elkin}
                """
            ),
            f"operators[1].key (line 3): 'elkin' is already used by operators[0].key ('елкин'): "
            f"{UNIQUE}",
            id="cyrillic-key-latin-key",
        ),
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: yulia, bitrix_id: 15, name: Yulia}
                queues:
                  - {key: support, bitrix_id: 3, name: Support, aliases: [Юлия]}
                """
            ),
            "queues[0].aliases[0] (line 4): 'Юлия' is already used by operators[0].key "
            f"('yulia'): {UNIQUE}",
            id="operator-key-queue-alias-transliterated",
        ),
        pytest.param(
            yaml(
                """\
                operators:
                  - {key: fedor, bitrix_id: 15, name: Fedor}
                  - {key: bob, bitrix_id: 16, name: Bob, aliases: [Фёдор]}
                """
            ),
            "operators[1].aliases[0] (line 3): 'Фёдор' is already used by operators[0].key "
            f"('fedor'): {UNIQUE}",
            id="yo-folds-to-e",
        ),
    ],
)
def test_names_must_be_unique_in_every_script(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_one_entry_may_spell_its_own_name_both_ways() -> None:
    text = "operators:\n  - {key: anna, bitrix_id: 15, name: Anna, aliases: [анна, Anya]}\n"
    assert parse_config(text, {}).operators[0].aliases == ("анна", "Anya")


def test_a_clash_across_scripts_is_found_by_load_config(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "operators:\n"
        "  - {key: anna, bitrix_id: 15, name: Anna}\n"
        "  - {key: анна, bitrix_id: 16, name: Анна Петрова}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, env={})
    assert [str(p) for p in caught.value.problems] == [
        f"operators[1].key (line 3): 'анна' is already used by operators[0].key ('anna'): {UNIQUE}"
    ]


def test_an_included_key_that_folds_like_a_config_name_is_keyed_by_its_id(
    tmp_path: Path,
) -> None:
    (tmp_path / "directory.generated.yaml").write_text(
        "operators:\n  - {key: анна, bitrix_id: 16, name: Анна Петрова}\n", encoding="utf-8"
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "include: directory.generated.yaml\noperators:\n  - {key: anna, bitrix_id: 15, name: A}\n",
        encoding="utf-8",
    )
    config = load_config(config_file, env={})
    assert [op.key for op in config.operators] == ["anna", "user16"]


def test_duplicate_bitrix_id_among_operators() -> None:
    text = yaml(
        """\
        operators:
          - {key: anna, bitrix_id: 15, name: Anna}
          - {key: bob, bitrix_id: 16, name: Bob}
          - {key: carl, bitrix_id: 15, name: Carl}
        """
    )
    assert problems(text) == [
        "operators[2].bitrix_id (line 4): bitrix_id 15 is already used by operators[0]"
    ]


def test_operator_and_queue_may_share_a_bitrix_id() -> None:
    text = yaml(
        """\
        operators:
          - {key: anna, bitrix_id: 3, name: Anna}
        queues:
          - {key: support, bitrix_id: 3, name: Support}
        """
    )
    config = parse_config(text, {})
    assert (config.operators[0].bitrix_id, config.queues[0].bitrix_id) == (3, 3)


def test_duplicate_supervisor_id() -> None:
    text = yaml(
        """\
        supervisors:
          - {id: 111, name: Olga}
          - {id: 111, name: Olga again}
        """
    )
    assert problems(text) == ["supervisors[1].id (line 3): id 111 is listed twice"]


# ---- the webhook URL --------------------------------------------------------------------


def webhook_problems(url: str) -> list[str]:
    return problems(f"bitrix24:\n  webhook_url: {url}\n")


def webhook_of(url: str) -> str:
    settings = parse_config(f"bitrix24:\n  webhook_url: {url}\n", {}).bitrix24
    assert settings.webhook_url is not None
    return settings.webhook_url.get_secret_value()


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://portal.bitrix24.ru/rest/1/abc123/", "https://portal.bitrix24.ru/rest/1/abc123/"),
        ("https://portal.bitrix24.ru/rest/1/abc123", "https://portal.bitrix24.ru/rest/1/abc123/"),
        ("http://127.0.0.1:8080/rest/1/abc/", "http://127.0.0.1:8080/rest/1/abc/"),
        ("http://localhost/rest/1/abc/", "http://localhost/rest/1/abc/"),
        ("http://LOCALHOST:9000/rest/12/abc/", "http://LOCALHOST:9000/rest/12/abc/"),
        ("'http://[::1]:8080/rest/1/abc/'", "http://[::1]:8080/rest/1/abc/"),
    ],
)
def test_webhook_url_accepted(url: str, stored: str) -> None:
    assert webhook_of(url) == stored


@pytest.mark.parametrize(
    "url",
    [
        "http://portal.bitrix24.ru/rest/1/abc/",
        "http://localhost.evil.example/rest/1/abc/",
        "http://10.0.0.5/rest/1/abc/",
    ],
)
def test_plain_http_webhook_rejected(url: str) -> None:
    assert webhook_problems(url) == [
        "bitrix24.webhook_url (line 2): must start with https:// "
        "(plain http is allowed only for 127.0.0.1/localhost)"
    ]


def test_non_http_webhook_rejected() -> None:
    assert webhook_problems("ftp://portal.bitrix24.ru/rest/1/abc/") == [
        "bitrix24.webhook_url (line 2): must start with https://"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.bitrix24.ru/",
        "https://portal.bitrix24.ru/rest/abc/",
        "https://portal.bitrix24.ru/rest/x/abc/",
        "https://portal.bitrix24.ru/rest/1/abc/imopenlines.operator.transfer/",
        "https://portal.bitrix24.ru/api/1/abc/",
    ],
)
def test_webhook_url_not_in_rest_form(url: str) -> None:
    assert webhook_problems(url) == [
        "bitrix24.webhook_url (line 2): must look like https://<portal>/rest/<user_id>/<code>/ "
        "(copy it from Bitrix24: Developer resources > Inbound webhook)"
    ]


# ---- the token --------------------------------------------------------------------------

TOKEN_PROBLEM = "does not look like a bot token (BotFather gives 123456789:AA...)"


@pytest.mark.parametrize(
    "token",
    [
        "LEAKMEnoColonLEAKMEnoColonLEAKME",
        "12345:LEAKMEshort",
        "abc:LEAKMEaaaaaaaaaaaaaaaaaaaaaaaa",
        "12345:LEAKME aaaaaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_malformed_token_is_reported_without_echoing_it(token: str) -> None:
    error = config_error(f"telegram:\n  token: '{token}'\n")
    assert [str(p) for p in error.problems] == [f"telegram.token (line 2): {TOKEN_PROBLEM}"]
    assert "LEAKME" not in str(error)
    assert "LEAKME" not in repr(error)


def test_malformed_token_from_env_is_not_echoed() -> None:
    error = config_error("language: en\n", {"TELEGRAM_BOT_TOKEN": "LEAKME-not-a-token"})
    assert len(error.problems) == 1
    assert str(error.problems[0]) == (f"telegram.token: {TOKEN_PROBLEM} (from $TELEGRAM_BOT_TOKEN)")
    assert "LEAKME" not in str(error)
    assert "LEAKME" not in repr(error)


def test_malformed_token_from_env_does_not_point_at_an_unrelated_line() -> None:
    # line 1 is "language: en": the bad token came from TELEGRAM_BOT_TOKEN, not from the file
    error = config_error("language: en\n", {"TELEGRAM_BOT_TOKEN": "LEAKME-not-a-token"})
    (problem,) = [str(p) for p in error.problems]
    assert problem.startswith("telegram.token")
    assert "(line 1)" not in problem


# ---- many problems at once --------------------------------------------------------------

SEVERAL_FIELD_PROBLEMS = yaml(
    """\
    languag: en
    bitrix24:
      webhook_url: http://portal.example.com/rest/1/abc/
    telegram:
      token: "12345:short"
    operators:
      - {key: anna, bitrix_id: 0, name: Anna}
      - {key: carl, bitrix_id: 17}
    """
)


def test_several_problems_are_all_reported_in_line_order() -> None:
    error = config_error(SEVERAL_FIELD_PROBLEMS)
    assert [str(p) for p in error.problems] == [
        "languag (line 1): unknown key (a typo?); did you mean 'language'?",
        "bitrix24.webhook_url (line 3): must start with https:// "
        "(plain http is allowed only for 127.0.0.1/localhost)",
        f"telegram.token (line 5): {TOKEN_PROBLEM}",
        "operators[0].bitrix_id (line 7): must be a positive integer",
        "operators[1].name (line 8): is required",
    ]
    assert str(error).startswith("config: 5 problems\n")
    assert str(error).count("\n  - ") == 5


def test_field_and_uniqueness_problems_are_reported_together() -> None:
    text = yaml(
        """\
        operators:
          - {key: anna, bitrix_id: 0, name: Anna}
          - {key: ANNA, bitrix_id: 16, name: Anna Two}
        supervisors:
          - {id: 111, name: Olga}
          - {id: 111, name: Olga again}
        """
    )
    assert problems(text) == [
        "operators[0].bitrix_id (line 2): must be a positive integer",
        f"operators[1].key (line 3): 'ANNA' is already used by operators[0].key: {UNIQUE}",
        "supervisors[1].id (line 6): id 111 is listed twice",
    ]


def test_yaml_duplicate_key_and_field_problem_are_reported_together() -> None:
    text = "language: en\nlanguage: ru\noperators:\n  - {key: anna, bitrix_id: -1, name: A}\n"
    assert problems(text) == [
        "language (line 2): key 'language' appears twice in the same section",
        "operators[0].bitrix_id (line 4): must be a positive integer",
    ]


def test_config_error_header_names_the_source_and_count() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("languag: en\n", {}, source="team.yaml")
    assert str(info.value) == (
        "team.yaml: 1 problem\n"
        "  - languag (line 1): unknown key (a typo?); did you mean 'language'?"
    )


# ---- messages overrides -----------------------------------------------------------------


def test_messages_override_is_loaded() -> None:
    text = "messages:\n  ru:\n    result.ok: 'Готово: {dialog} → {target}'\n"
    config = parse_config(text, {})
    assert config.messages == {"ru": {"result.ok": "Готово: {dialog} → {target}"}}


def test_messages_override_with_unknown_key() -> None:
    text = "messages:\n  en:\n    result.okay: 'Moved {dialog}'\n"
    assert problems(text) == [
        "messages.en.result.okay (line 3): no such message (see the list in the README)"
    ]


def test_messages_override_with_unknown_placeholder() -> None:
    text = yaml(
        """\
        messages:
          en:
            result.ok: 'Moved {dialog} to {target}'
          ru:
            result.ok: 'Передан {dialog} от {who}'
        """
    )
    assert problems(text) == [
        "messages.ru.result.ok (line 5): unknown placeholder who; "
        "allowed: {admin}, {dialog}, {previous}, {target}"
    ]


def test_messages_override_for_unknown_language() -> None:
    lines = problems("messages:\n  de:\n    result.ok: 'Verschoben'\n")
    assert len(lines) == 1
    assert lines[0].startswith("messages.de")
    assert "(line 2)" in lines[0]


# ---- secrets: missing, masked, never printed --------------------------------------------


def test_missing_secrets_name_the_env_vars() -> None:
    missing = parse_config("language: en\n", {}).missing_secrets()
    assert len(missing) == 2
    assert "telegram.token" in missing[0]
    assert "TELEGRAM_BOT_TOKEN" in missing[0]
    assert "bitrix24.webhook_url" in missing[1]
    assert "BITRIX24_WEBHOOK_URL" in missing[1]


def test_missing_secrets_names_only_what_is_missing() -> None:
    config = parse_config("language: en\n", {"TELEGRAM_BOT_TOKEN": FAKE_TOKEN})
    missing = config.missing_secrets()
    assert len(missing) == 1
    assert "BITRIX24_WEBHOOK_URL" in missing[0]


def test_masked_webhook_hides_the_code() -> None:
    config = parse_config("language: en\n", SECRET_ENV)
    assert config.bitrix24.masked_webhook() == "https://portal.example.com/rest/1/***/"
    assert parse_config("language: en\n", {}).bitrix24.masked_webhook() == "(not set)"


def loaded_with_secrets() -> Config:
    return parse_config(SAMPLE.read_text(encoding="utf-8"), SECRET_ENV)


@pytest.mark.parametrize("render", [str, repr], ids=["str", "repr"])
def test_loaded_config_never_shows_secrets(render: Callable[[object], str]) -> None:
    config = loaded_with_secrets()
    for shown in (render(config), render(config.telegram), render(config.bitrix24)):
        assert FAKE_CODE not in shown
        assert FAKE_TOKEN_SECRET not in shown


def test_config_error_never_shows_secrets() -> None:
    text = SAMPLE.read_text(encoding="utf-8") + "languag: en\n"
    error = config_error(text, SECRET_ENV)
    for shown in (str(error), repr(error), *(str(p) for p in error.problems)):
        assert FAKE_CODE not in shown
        assert FAKE_TOKEN_SECRET not in shown


@pytest.mark.parametrize(
    "url",
    [
        f"http://portal.example.com/rest/1/{FAKE_CODE}/",
        f"https://portal.example.com/rest/{FAKE_CODE}/",
        f"https://portal.example.com/hook/1/{FAKE_CODE}/",
    ],
)
def test_rejected_webhook_url_is_not_echoed(url: str) -> None:
    error = config_error(f"bitrix24:\n  webhook_url: {url}\n")
    assert FAKE_CODE not in str(error)
    assert FAKE_CODE not in repr(error)


# ---- files ------------------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}: 1 problem\n  - (top level): file not found (use --config PATH or set BOT_CONFIG)"
    )


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("admin_contact: Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [str(p) for p in info.value.problems] == ["(top level): cannot be read: not UTF-8 text"]


# ---- the CLI: python -m bot check -------------------------------------------------------


def run_check(
    config: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "BITRIX24_WEBHOOK_URL", "BOT_CONFIG")
    }
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", "check", "--config", str(config)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_check_sample_lists_the_directory() -> None:
    result = run_check(SAMPLE)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{SAMPLE}: OK"

    def row(first_name: str) -> list[str]:
        found = [line.split() for line in lines if line.split()[:1] == [first_name]]
        assert len(found) == 1, result.stdout
        return found[0]

    assert row("@anna") == ["@anna", "@anna_s", "@anya", "15", "Anna", "Smirnova"]
    assert row("@bob") == ["@bob", "16", "Bob", "Lee"]
    assert row("#support") == ["#support", "#sup", "3", "Support", "line"]
    assert row("@kate") == ["@kate", "29", "Kate", "Roy"]
    assert "operators (3)" in lines
    assert "queues (1)" in lines
    assert "bitrix24: (not set)" in lines
    assert "TELEGRAM_BOT_TOKEN" in result.stdout
    assert "BITRIX24_WEBHOOK_URL" in result.stdout


def test_cli_check_masks_the_webhook_from_env() -> None:
    result = run_check(SAMPLE, SECRET_ENV)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "bitrix24: https://portal.example.com/rest/1/***/" in result.stdout.splitlines()
    assert FAKE_CODE not in result.stdout + result.stderr
    assert FAKE_TOKEN_SECRET not in result.stdout + result.stderr
    assert "note:" not in result.stdout


def test_cli_check_bad_file_prints_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEVERAL_FIELD_PROBLEMS, encoding="utf-8")
    result = run_check(bad)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}: 5 problems",
        "  - languag (line 1): unknown key (a typo?); did you mean 'language'?",
        "  - bitrix24.webhook_url (line 3): must start with https:// "
        "(plain http is allowed only for 127.0.0.1/localhost)",
        f"  - telegram.token (line 5): {TOKEN_PROBLEM}",
        "  - operators[0].bitrix_id (line 7): must be a positive integer",
        "  - operators[1].name (line 8): is required",
    ]


def test_cli_check_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("language: en\noperators: [anna\nqueues: []\n", encoding="utf-8")
    result = run_check(bad)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert f"{bad}: 1 problem" in result.stderr
    assert "(line 3): not valid YAML" in result.stderr


def test_cli_check_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = run_check(missing)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{missing}: 1 problem",
        "  - (top level): file not found (use --config PATH or set BOT_CONFIG)",
    ]


def test_a_too_long_name_says_how_long_it_may_be() -> None:
    error = config_error("operators:\n  - {key: a, bitrix_id: 1, name: " + "x" * 201 + "}\n")
    assert [str(p) for p in error.problems] == [
        "operators[0].name (line 2): is too long (at most 200 characters)"
    ]


def test_include_adds_a_generated_directory_and_the_config_wins(tmp_path: Path) -> None:
    (tmp_path / "directory.generated.yaml").write_text(
        "operators:\n"
        '  - {key: "anna.smirnova", bitrix_id: 15, name: "Anna Smirnova"}\n'  # in config: left out
        '  - {key: "carol.king", bitrix_id: 30, name: "Carol King"}\n'
        '  - {key: "bob", bitrix_id: 31, name: "Bob Another"}\n'  # key taken by config: by ID
        "queues:\n"
        '  - {key: "sales", bitrix_id: 5, name: "Sales"}\n',
        encoding="utf-8",
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "include: directory.generated.yaml\n"
        "operators:\n"
        "  - {key: anna, bitrix_id: 15, name: Anna S., aliases: [anya]}\n"
        "  - {key: bob, bitrix_id: 16, name: Bob Lee}\n",
        encoding="utf-8",
    )
    config = load_config(config_file, {})
    assert [(o.key, o.bitrix_id) for o in config.operators] == [
        ("anna", 15),
        ("bob", 16),
        ("carol.king", 30),
        ("user31", 31),
    ]
    assert [(q.key, q.bitrix_id) for q in config.queues] == [("sales", 5)]


def test_a_missing_include_is_a_clear_problem(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("include: nowhere.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, {})
    [problem] = caught.value.problems
    assert str(problem).startswith("include (line 1): nowhere.yaml: cannot be read")


# ---- storage: the file's url reaches the config, $STORAGE_URL wins, never shown ----------

FAKE_DB_PASSWORD = "zq9FAKEdbPASSWORD7x"
FAKE_DB_URL = f"postgresql://bot:{FAKE_DB_PASSWORD}@db.example.com:5432/handoff"


def test_load_config_keeps_storage_url_and_puts_the_path_next_to_the_file(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"storage:\n  path: audit.sqlite3\n  url: {FAKE_DB_URL}\n", encoding="utf-8"
    )
    storage = load_config(config_file, env={}).storage
    assert storage.url is not None
    assert storage.url.get_secret_value() == FAKE_DB_URL
    assert storage.path == str(tmp_path.resolve() / "audit.sqlite3")


def test_load_config_without_storage_url_is_sqlite_next_to_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("language: en\n", encoding="utf-8")
    storage = load_config(config_file, env={}).storage
    assert storage.url is None
    assert storage.path == str(tmp_path.resolve() / "handoff.sqlite3")


def test_storage_url_from_env_wins_over_the_file() -> None:
    text = "storage: {url: 'postgresql://file@db.example.com/file'}\n"
    config = parse_config(text, {"STORAGE_URL": FAKE_DB_URL})
    assert config.storage.url is not None
    assert config.storage.url.get_secret_value() == FAKE_DB_URL
    from_file = parse_config(text, {"STORAGE_URL": ""})  # empty: the file's stays
    assert from_file.storage.url is not None
    assert from_file.storage.url.get_secret_value() == "postgresql://file@db.example.com/file"
    only_env = parse_config("language: en\n", {"STORAGE_URL": FAKE_DB_URL})
    assert only_env.storage.url is not None
    assert only_env.storage.url.get_secret_value() == FAKE_DB_URL


@pytest.mark.parametrize("render", [str, repr], ids=["str", "repr"])
def test_storage_url_is_never_shown(render: Callable[[object], str]) -> None:
    config = parse_config("language: en\n", {"STORAGE_URL": FAKE_DB_URL})
    for shown in (render(config), render(config.storage)):
        assert FAKE_DB_PASSWORD not in shown
        assert "db.example.com" not in shown


def test_a_bad_storage_url_is_reported_without_echoing_it() -> None:
    url = f"mysql://bot:{FAKE_DB_PASSWORD}@db.example.com/handoff"
    error = config_error(f"storage:\n  url: {url}\n")
    assert [str(p) for p in error.problems] == [
        "storage.url (line 2): must be a postgresql:// URL (or leave it out for SQLite)"
    ]
    assert FAKE_DB_PASSWORD not in str(error) + repr(error)

    error = config_error("language: en\n", {"STORAGE_URL": url})
    assert [str(p) for p in error.problems] == [
        "storage.url: must be a postgresql:// URL (or leave it out for SQLite) (from $STORAGE_URL)"
    ]
    assert FAKE_DB_PASSWORD not in str(error) + repr(error)


# ---- shutdown_grace_s ---------------------------------------------------------------------


def test_shutdown_grace_defaults_to_30_seconds_and_may_be_set() -> None:
    assert parse_config("language: en\n", {}).shutdown_grace_s == 30
    assert parse_config("shutdown_grace_s: 2.5\n", {}).shutdown_grace_s == 2.5
    assert parse_config("shutdown_grace_s: 600\n", {}).shutdown_grace_s == 600
    assert parse_config("shutdown_grace_s: ${GRACE:-45}\n", {}).shutdown_grace_s == 45


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "must be more than 0"),
        ("-5", "must be more than 0"),
        ("600.5", "must be at most 600"),
        ("3600", "must be at most 600"),
        ("soon", "must be a number"),
        ("[30]", "must be a number"),
    ],
)
def test_shutdown_grace_out_of_range(value: str, expected: str) -> None:
    assert problems(f"language: en\nshutdown_grace_s: {value}\n") == [
        f"shutdown_grace_s (line 2): {expected}"
    ]


def test_shutdown_grace_typo_is_suggested() -> None:
    assert problems("shutdown_grace: 10\n") == [
        "shutdown_grace (line 1): unknown key (a typo?); did you mean 'shutdown_grace_s'?"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("button_expiry_min: 0\n", "button_expiry_min (line 1): must be more than 0"),
        ("button_expiry_min: 3000\n", "button_expiry_min (line 1): must be at most 2880"),
        ("bitrix24:\n  burst: 0\n", "bitrix24.burst (line 2): must be at least 1"),
        ("bitrix24:\n  timeout_s: 61\n", "bitrix24.timeout_s (line 2): must be at most 60"),
    ],
)
def test_numbers_out_of_range_say_the_bound(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# ---- timezone: the team's, for /history ----------------------------------------------------


def test_timezone_defaults_to_utc() -> None:
    config = parse_config("language: en\n", {})
    assert config.timezone == "UTC"
    assert config.zone.key == "UTC"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Europe/Moscow", "Europe/Moscow"), ("europe/moscow", "Europe/Moscow"), ("utc", "UTC")],
)
def test_timezone_is_an_iana_name_in_any_case(value: str, expected: str) -> None:
    config = parse_config(f"language: en\ntimezone: {value}\n", {})
    assert config.timezone == expected
    assert config.zone.key == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Europe/Moskow",
            "'Europe/Moskow' is not a time zone name; did you mean Europe/Moscow or Europe/Minsk?",
        ),
        # an abbreviation is no name, and MST (its closest spelling) is not what MSK meant
        ("MSK", "'MSK' is not a time zone name; use one like Europe/Moscow or UTC"),
        (
            "../../etc/passwd",
            "'../../etc/passwd' is not a time zone name; use one like Europe/Moscow or UTC",
        ),
        ("3", "must be a time zone name such as Europe/Moscow or UTC"),
        ('""', "must be a time zone name such as Europe/Moscow or UTC"),
    ],
)
def test_an_unknown_timezone_is_reported_with_its_line(value: str, expected: str) -> None:
    assert problems(f"language: en\nadmin_contact: x\ntimezone: {value}\n") == [
        f"timezone (line 3): {expected}"
    ]
