"""Command line of ``handoff-bot`` (or ``python -m bot``): ``run`` (the default), ``demo``,
``check`` (``--online``: ask the portal too), ``audit``, ``directory sync``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.backup import backup_command
from bot.config import (
    ENV_WEBHOOK,
    ENV_WEBHOOK_SECRET,
    Config,
    ConfigError,
    config_path,
    config_warnings,
    load_config,
    parse_listen,
    read_config_text,
)
from bot.directory import Directory
from bot.logs import setup_logging
from bot.schema import SchemaTooNew
from bot.storage import NoAuditTrail, export_audit, to_csv

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it


# The options of the bot as a whole. They go before the subcommand or after it (`check
# --config x.yaml`); after it, each subcommand takes those that mean something to it.
_OPTIONS: dict[str, dict[str, Any]] = {
    "--config": {
        "metavar": "PATH",
        "help": "config file (default: $BOT_CONFIG, else ./config.yaml)",
    },
    "--log-level": {
        "choices": ["DEBUG", "INFO", "WARNING"],
        "help": "how much to log (default: INFO)",
    },
    "--log-format": {
        "choices": ["text", "json"],
        "help": "log lines as text or as JSON (default: text)",
    },
    "--webhook-url": {
        "metavar": "URL",
        "help": "webhook mode: the https:// URL Telegram posts updates to",
    },
    "--listen": {
        "metavar": "HOST:PORT",
        "help": "webhook mode: where to listen (default: 0.0.0.0:8080)",
    },
    "--metrics": {
        "metavar": "HOST:PORT",
        "help": "polling mode: serve GET /metrics there, such as 127.0.0.1:9108 (default: off)",
    },
}
_DEFAULTS: dict[str, Any] = {"--log-level": "INFO", "--log-format": "text"}


def program_name(argv0: str) -> str:
    """How the user started us, for help and usage lines: ``handoff-bot`` or ``python -m bot``."""
    name = Path(argv0).name
    return "python -m bot" if name in ("__main__.py", "") else name


def _options(parser: argparse.ArgumentParser, names: Sequence[str], *, top: bool) -> None:
    """Add global options; a subcommand's copy leaves the value given before it alone."""
    for name in names:
        default = _DEFAULTS.get(name) if top else argparse.SUPPRESS
        parser.add_argument(name, default=default, **_OPTIONS[name])


def _version() -> str:
    """The installed package's version (what a bug report should quote)."""
    try:
        return importlib.metadata.version("handoff-bot")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "unknown (not installed)"


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Telegram bot that moves Bitrix24 open-line dialogs between operators. "
        "Without a subcommand it runs the bot.",
    )
    _options(parser, list(_OPTIONS), top=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{run,demo,check,audit,directory,backup}")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description)

    run_command = command(
        "run",
        "run the bot (the default)",
        "Run the bot: long polling, or webhook mode with --webhook-url. SIGINT/SIGTERM stop it "
        "gracefully.",
    )
    _options(run_command, list(_OPTIONS), top=False)

    demo_command = command(
        "demo",
        "try the bot in a console sandbox: no Telegram, no portal",
        "The real bot against a Bot API server and a Bitrix24 portal simulator on 127.0.0.1. "
        "Type commands; a number presses that button; ^ replies; Ctrl-D or Ctrl-C quits.",
    )
    demo_command.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $BOT_CONFIG, else ./config.yaml if there is one, "
        "else the sample that ships with the bot)",
    )
    demo_command.add_argument(
        "--log-level",
        choices=_OPTIONS["--log-level"]["choices"],
        default=argparse.SUPPRESS,
        help="how much the bot logs under the chat (default: warnings only)",
    )
    demo_command.add_argument(
        "--lang",
        choices=["en", "ru"],
        help="your Telegram language in the sandbox (default: from $LC_ALL or $LANG)",
    )

    check_command = command(
        "check",
        "validate the config and print the directory",
        "Validate the config file: print the directory as the bot understands it (exit 0) "
        "or every problem, one line each (exit 1).",
    )
    _options(check_command, ["--config"], top=False)
    check_command.add_argument(
        "--online",
        action="store_true",
        help="then ask the portal: its address, the webhook code, the webhook's user, scopes",
    )

    audit_command = command(
        "audit",
        "export the audit trail",
        "Print the audit trail as CSV: time, user_id, chat_id, dialog, target, action, "
        "outcome, latency_ms, update_id. Reads the database only; never creates one.",
    )
    _options(audit_command, ["--config"], top=False)
    audit_command.add_argument(
        "--since", default="1970-01-01", help="a date or time (ISO 8601, UTC)"
    )
    audit_command.add_argument(
        "--csv", action="store_true", help="CSV with a header line (the default)"
    )

    directory = command(
        "directory",
        "the directory: `directory sync` from the portal",
        "Work with the directory of operators and queues.",
    )
    _options(directory, ["--config"], top=False)
    directory_sub = directory.add_subparsers(dest="action", metavar="{sync}", required=True)
    sync_command = directory_sub.add_parser(
        "sync",
        help="write directory.generated.yaml from the portal",
        description="Read the portal's active employees and open lines and write "
        "directory.generated.yaml next to the config, showing what changed.",
    )
    _options(sync_command, ["--config"], top=False)

    backup = command(
        "backup",
        "copy the SQLite database to FILE, while the bot runs",
        "Write a consistent copy of the bot's SQLite database to FILE (SQLite's online "
        "backup: the bot may go on running). PostgreSQL: use pg_dump.",
    )
    _options(backup, ["--config"], top=False)
    backup.add_argument("file", metavar="FILE", help="where to write the copy")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    return parser


def _load(path_arg: str | None) -> Config | None:
    path = config_path(path_arg)
    try:
        return load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


def check(path_arg: str | None, *, online: bool = False) -> int:
    """Validate a config file; print the directory and any warnings (exit 0) or every
    problem (exit 1).

    ``online``: then ask the portal too, one line per finding (exit 1 if one stops the bot)."""
    config = _load(path_arg)
    if config is None:
        return EXIT_PROBLEMS
    directory = Directory.from_config(config)
    print(f"{config_path(path_arg)}: OK")
    everyone = (*directory.operators, *directory.queues)
    width = max((len(" ".join(directory.spellings(t))) for t in everyone), default=0)
    for title, entries in (("operators", directory.operators), ("queues", directory.queues)):
        print(f"\n{title} ({len(entries)})")
        for target in entries:
            names = " ".join(directory.spellings(target))
            print(f"  {names:<{width}}  {target.bitrix_id:>7}  {target.name}")
    print(
        f"\nsupervisors: {len(config.supervisors)}, group chats: {len(config.chats)}, "
        f"announce to: {config.announce_to if config.announce_to is not None else '-'}"
    )
    print(f"bitrix24: {config.bitrix24.masked_webhook()}")
    for line in config.missing_secrets():
        print(f"note: {line} (needed to run)")
    for line in config_warnings(config, read_config_text(config_path(path_arg))):
        print(f"warning: {line}")
    return check_online(config, config_path(path_arg)) if online else EXIT_OK


def check_online(config: Config, path: Path) -> int:
    """Ask the portal whether the bot can work with it; print one line per finding."""
    from bot.portal_check import check_failed, check_portal, stops_the_bot

    if config.bitrix24.webhook_url is None and config.bitrix24.oauth is None:
        print(next(s for s in config.missing_secrets() if ENV_WEBHOOK in s), file=sys.stderr)
        return EXIT_USAGE
    # the findings tell what the client would log (a moved portal, say): once is enough
    logging.getLogger("bot").addHandler(logging.NullHandler())
    try:
        findings = asyncio.run(check_portal(config, path))
    except Exception as exc:  # one line, never a traceback
        findings = [check_failed(exc)]
    print()
    for finding in findings:
        print(finding)
    return EXIT_PROBLEMS if stops_the_bot(findings) else EXIT_OK


def audit(path_arg: str | None, since: str) -> int:
    """Print the audit trail from ``since`` on as CSV; exit 1 when there is no database (it is
    never created here)."""
    try:
        start = datetime.fromisoformat(since)
    except ValueError:
        print(
            f"--since {since!r}: not a date; use e.g. 2026-11-01 or 2026-11-01T08:00",
            file=sys.stderr,
        )
        return EXIT_USAGE
    config = _load(path_arg)
    if config is None:
        return EXIT_PROBLEMS
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)

    try:
        entries = asyncio.run(export_audit(config.storage, start))
    except NoAuditTrail as err:
        print(err, file=sys.stderr)
        return EXIT_PROBLEMS
    sys.stdout.write(to_csv(entries))
    return EXIT_OK


def directory_sync(path_arg: str | None) -> int:
    """Write ``directory.generated.yaml`` from the portal's employees and open lines."""
    from bot.bitrix24.client import BitrixClient
    from bot.directory_sync import SyncError, generated_path, sync

    config = _load(path_arg)
    if config is None:
        return EXIT_PROBLEMS
    if config.bitrix24.webhook_url is None:
        print(config.missing_secrets()[-1], file=sys.stderr)
        return EXIT_USAGE
    out = generated_path(config_path(path_arg))

    async def work() -> list[str]:
        async with BitrixClient(config.bitrix24) as client:
            return await sync(client, out)

    try:
        changes = asyncio.run(work())
    except SyncError as err:
        print(err, file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"{out}: " + ("no changes" if not changes else f"{len(changes)} changes"))
    for line in changes:
        print(f"  {line}")
    if changes:
        print(f"add `include: {out.name}` to config.yaml if it is not there yet")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run the bot until SIGINT/SIGTERM: long polling, or webhook mode when a URL is given."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    missing = config.missing_secrets()
    hook = config.telegram.webhook
    url = args.webhook_url or hook.url
    listen = args.listen or hook.listen
    if url and hook.secret is None:
        missing.append(
            f"webhook mode needs a secret: export {ENV_WEBHOOK_SECRET}=<random letters and digits>"
        )
    if url and not url.startswith("https://"):
        missing.append(f"--webhook-url {url!r}: must start with https://")
    # aiogram is imported only when the bot really runs
    from bot.telegram_start import Readiness, check_telegram, storage_problem

    # before anything connects: SQLite itself would fail only on the first command
    if (problem := storage_problem(config.storage)) is not None:
        missing.append(problem)
    if missing:
        for line in missing:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    metrics_listen = None if url else args.metrics or config.metrics.listen
    try:
        if url:
            parse_listen(listen)
        if metrics_listen:
            parse_listen(metrics_listen, "--metrics")
    except ValueError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    secrets = [
        s.get_secret_value()
        for s in (config.telegram.token, config.bitrix24.webhook_url, hook.secret)
        if s is not None
    ]
    setup_logging(args.log_level, secrets, json_lines=args.log_format == "json")
    if hasattr(signal, "SIGHUP"):
        # `systemctl reload` while the bot still waits for Telegram: SIGHUP's default would end
        # it; the bot's own handler (a reload) takes over once it serves
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        # waits out a network that is not up yet; a refused token is one line, exit 2
        readiness = asyncio.run(check_telegram(config, polling=not url))
        if readiness is not Readiness.READY:
            return EXIT_USAGE if readiness is Readiness.REFUSED else EXIT_OK
        if url:
            from bot.webhook import run_webhook

            assert hook.secret is not None
            secret = hook.secret.get_secret_value()
            asyncio.run(run_webhook(config, url, listen, secret, config_path(args.config)))
        else:
            from bot.app import run_polling

            asyncio.run(run_polling(config, config_path(args.config), metrics_listen))
    except KeyboardInterrupt:  # Ctrl+C in a moment when no signal handler of ours is set
        return EXIT_OK
    except SchemaTooNew as err:  # a database of a newer release: one line, never a traceback
        print(err, file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def demo(path_arg: str | None, log_level: str, language: str | None) -> int:
    """The console sandbox: the real bot against an embedded portal and Bot API."""
    from bot.sandbox import STOPPED

    try:
        from bot.sandbox.demo import demo_config_path, run_demo

        return asyncio.run(run_demo(demo_config_path(path_arg), log_level, language))
    except KeyboardInterrupt:  # Ctrl-C while the sandbox's own handler is not set yet
        print(STOPPED, file=sys.stderr)
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bot`` and the ``handoff-bot`` script."""
    args = _parser(program_name(sys.argv[0])).parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:  # Ctrl-C during a check, an export or a sync: no traceback
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        return check(args.config, online=args.online)
    if args.command == "directory":
        return directory_sync(args.config)
    if args.command == "audit":
        return audit(args.config, args.since)
    if args.command == "backup":
        return backup_command(args.config, args.file, force=args.force)
    if args.command == "demo":
        return demo(args.config, args.log_level, args.lang)
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m bot check | head`
        sys.stderr.close()
        sys.exit(EXIT_OK)
