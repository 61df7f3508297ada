"""Command line: ``python -m bot`` (run), ``python -m bot demo``, ``python -m bot check``
(``--online``: ask the portal too)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot.backup import backup_command
from bot.config import (
    ENV_WEBHOOK,
    ENV_WEBHOOK_SECRET,
    Config,
    ConfigError,
    config_path,
    load_config,
    parse_listen,
)
from bot.directory import Directory
from bot.logs import setup_logging
from bot.schema import SchemaTooNew
from bot.storage import open_storage, to_csv

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Telegram bot that moves Bitrix24 open-line dialogs between operators.",
    )
    parser.add_argument("--config", help="config file (default: $BOT_CONFIG or ./config.yaml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument(
        "--webhook-url", help="webhook mode: the https:// URL Telegram posts updates to"
    )
    parser.add_argument("--listen", help="webhook mode: HOST:PORT to listen on (0.0.0.0:8080)")
    parser.add_argument(
        "--metrics", help="polling mode: serve GET /metrics on HOST:PORT (127.0.0.1:9108)"
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,demo,check,audit,directory,backup}")
    sub.add_parser("run", help="run the bot with long polling (the default)")
    sub.add_parser("demo", help="try the bot in a console sandbox: no Telegram, no portal")
    check_command = sub.add_parser("check", help="validate the config and print the directory")
    check_command.add_argument(
        "--online",
        action="store_true",
        help="then ask the portal: its address, the webhook code, the webhook's user, scopes",
    )
    audit = sub.add_parser("audit", help="export the audit trail")
    audit.add_argument("--since", default="1970-01-01", help="a date or time (ISO 8601, UTC)")
    audit.add_argument("--csv", action="store_true", help="CSV with a header line (the default)")
    directory = sub.add_parser("directory", help="the directory: `directory sync` from the portal")
    directory.add_argument("action", choices=["sync"])
    backup = sub.add_parser("backup", help="copy the SQLite database to FILE, while the bot runs")
    backup.add_argument("file", metavar="FILE", help="where to write the copy")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    for name in ("run", "demo", "check", "audit", "directory", "backup"):
        sub.choices[name].add_argument("--config", default=argparse.SUPPRESS, help="config file")
    return parser


def _load(path_arg: str | None) -> Config | None:
    path = config_path(path_arg)
    try:
        return load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


def check(path_arg: str | None, *, online: bool = False) -> int:
    """Validate a config file; print the directory (exit 0) or every problem (exit 1).

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
    """Print the audit trail from ``since`` on as CSV."""
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

    async def export() -> str:
        storage = open_storage(config.storage, boot="audit")
        try:
            return to_csv(await storage.since(start))
        finally:
            await storage.close()

    sys.stdout.write(asyncio.run(export()))
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


def demo(path_arg: str | None, log_level: str) -> int:
    """The console sandbox: the real bot against an embedded portal and Bot API."""
    from bot.sandbox.demo import run_demo

    path = config_path(path_arg)
    return asyncio.run(run_demo(path, log_level))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bot`` and the ``handoff-bot`` script."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check(args.config, online=args.online)
    if args.command == "directory":
        return directory_sync(args.config)
    if args.command == "audit":
        return audit(args.config, args.since)
    if args.command == "backup":
        return backup_command(args.config, args.file, force=args.force)
    if args.command == "demo":
        return demo(args.config, args.log_level)
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m bot check | head`
        sys.stderr.close()
        sys.exit(EXIT_OK)
