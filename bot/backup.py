"""``python -m bot backup FILE``: a consistent copy of the bot's SQLite database, taken while
the bot runs.

SQLite's online backup reads the database as of one moment (in WAL mode the bot goes on
writing meanwhile, unblocked); the copy is written next to FILE under a temporary name and
renamed into place, so FILE is either the whole copy or absent. PostgreSQL has its own tool
for this: ``pg_dump``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from bot.config import ConfigError, StorageSettings, config_path, load_config
from bot.schema import sqlite_version

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2  # as every command of ``python -m bot``


class BackupRefused(Exception):
    """Nothing to back up here, or FILE must not be written: one line for the admin."""


@dataclass(frozen=True)
class Copy:
    """What a backup wrote."""

    path: Path
    source: Path
    schema_version: int
    audit_rows: int
    size: int

    def summary(self) -> str:
        """The line ``backup`` prints."""
        return (
            f"wrote {self.path}: a copy of {self.source} ({self.size / 1024:,.0f} KB,"
            f" {self.audit_rows} audit rows, schema version {self.schema_version})"
        )


def backup(storage: StorageSettings, file: Path, *, force: bool = False) -> Copy:
    """Copy the SQLite database ``storage`` names to ``file`` (replaced only with ``force``).

    Raises :class:`BackupRefused` for PostgreSQL, no database, or a FILE not to be written;
    :class:`sqlite3.Error` or :class:`OSError` if the copy fails (FILE is then untouched)."""
    if storage.url is not None:
        raise BackupRefused(
            "the storage is PostgreSQL (storage.url): back it up with pg_dump,"
            " e.g. pg_dump --format=custom --file=handoff.dump <database>"
        )
    if storage.path == ":memory:":
        raise BackupRefused("storage.path is :memory:: there is no database on disk to back up")
    source = Path(storage.path)
    if not source.is_file():
        raise BackupRefused(f"no database at {source} (storage.path): nothing to back up")
    target = file.absolute()
    if target.exists() and target.resolve() == source.resolve():
        raise BackupRefused(f"{file} is the database itself: name another file")
    if target.exists() and not force:
        raise BackupRefused(f"{file} exists: name another file, or add --force to replace it")
    if not target.parent.is_dir():
        raise BackupRefused(f"{file}: the folder {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with (
            contextlib.closing(sqlite3.connect(source)) as db,
            contextlib.closing(sqlite3.connect(partial)) as copy,
        ):
            db.backup(copy)  # all pages in one step: one read transaction, one moment
            # a file of its own: no -wal beside it to forget when it is moved or restored
            copy.execute("PRAGMA journal_mode=DELETE")
            version = sqlite_version(copy)
            rows = int(copy.execute("SELECT count(*) FROM audit").fetchone()[0])
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return Copy(target, source, version, rows, target.stat().st_size)


def backup_command(config_arg: str | None, file: str, *, force: bool = False) -> int:
    """``python -m bot backup FILE``: 0 written, 1 a bad config or a failed copy, 2 refused."""
    path = config_path(config_arg)
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    try:
        copy = backup(config.storage, Path(file), force=force)
    except BackupRefused as err:
        print(err, file=sys.stderr)
        return EXIT_REFUSED
    except (sqlite3.Error, OSError) as err:
        print(f"backup to {file} failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(copy.summary())
    return EXIT_OK
