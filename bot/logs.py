"""Logging set-up that keeps secrets out of every line, whoever wrote it (us, aiogram, aiohttp)."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable

_WEBHOOK_CODE = re.compile(r"(/rest/\d+/)[^/\s]+")


class SecretMask(logging.Filter):
    """Replaces known secrets and webhook codes in a record, traceback included, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced."""
        text = _WEBHOOK_CODE.sub(r"\1***", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.mask(record.getMessage()), ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # the formatter prints exc_text when set: render the traceback once, masked
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = self.mask(text).rstrip("\n")
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(
    level: str = "INFO", secrets: Iterable[str] = (), *, json_lines: bool = False
) -> None:
    """Log to stderr, one line per event, with secrets masked."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMask(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
