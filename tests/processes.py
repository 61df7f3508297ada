"""The bot as its admin runs it: ``python -m bot`` in a subprocess, with a clean environment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("TELEGRAM_BOT_TOKEN", "BITRIX24_WEBHOOK_URL", "TELEGRAM_API_URL", "BOT_CONFIG")
}
GUARD_S = 60.0  # a guard against a hung process, not a timing assertion


class BotProcess:
    """``python -m bot`` in a subprocess; its stderr is read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.stdout = ""
        self._changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        """How many stderr lines contain ``text``."""
        return sum(text in line for line in self.lines)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = GUARD_S) -> None:  # noqa: ASYNC109
        """Until ``predicate()`` holds for the lines read so far (or the process ended)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.reader.done():
                    raise AssertionError(f"the bot exited first:\n{self.stderr}")
                self._changed.clear()
                await self._changed.wait()

    async def finish(self, timeout: float = GUARD_S) -> int:  # noqa: ASYNC109
        """Wait for the exit; returns the exit code."""
        assert self.process.stdout is not None
        out = await asyncio.wait_for(self.process.stdout.read(), timeout)
        self.stdout = out.decode()
        await asyncio.wait_for(self.reader, timeout)
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await self.finish()


@contextlib.asynccontextmanager
async def bot_process(
    config: Path, *args: str, wrapper: Sequence[str] = (), **env: str
) -> AsyncIterator[BotProcess]:
    """The bot started with ``config``, more command-line ``args`` and ``env``; killed if a
    test leaves it running. ``wrapper``: a command that runs it (``strace ...``)."""
    process = await asyncio.create_subprocess_exec(
        *wrapper,
        sys.executable,
        "-m",
        "bot",
        "--config",
        str(config),
        *args,
        cwd=ROOT,
        env={**CLEAN_ENV, "LANG": "en_US.UTF-8", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = BotProcess(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        running.reader.cancel()
