"""Everything a handler needs from the core, built once and passed in as workflow data."""

from __future__ import annotations

from dataclasses import dataclass

from bot.access import AccessPolicy
from bot.bitrix24.client import BitrixClient
from bot.config import Config
from bot.directory import Directory
from bot.handoff import Handoff
from bot.messages import Messages
from bot.pending import PendingStore
from bot.replies import Replies


@dataclass(frozen=True)
class Services:
    """The bot's core services for one configuration."""

    config: Config
    directory: Directory
    access: AccessPolicy
    handoff: Handoff
    replies: Replies
    pending: PendingStore

    @classmethod
    def build(cls, config: Config, client: BitrixClient) -> Services:
        """Wire the services of ``config`` around a Bitrix24 client."""
        directory = Directory.from_config(config)
        messages = Messages(config.messages, config.admin_contact)
        return cls(
            config=config,
            directory=directory,
            access=AccessPolicy(config),
            handoff=Handoff(client),
            replies=Replies(messages, directory),
            pending=PendingStore(expiry_s=config.button_expiry_min * 60),
        )
