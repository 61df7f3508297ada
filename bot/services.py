"""Everything a handler needs from the core, built once and passed in as workflow data."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from bot.access import AccessPolicy
from bot.announcer import Announcer, Poster
from bot.config import Config
from bot.directory import Directory
from bot.handoff import Handoff
from bot.messages import Messages
from bot.metrics import Metrics
from bot.pending import PendingStore
from bot.presence import Presence
from bot.replies import Replies
from bot.storage import Storage, open_storage


@dataclass(frozen=True)
class Services:
    """The bot's core services for one configuration."""

    config: Config
    directory: Directory
    access: AccessPolicy
    handoff: Handoff
    replies: Replies
    pending: PendingStore
    announcer: Announcer | None  # None when the config names no team chat
    storage: Storage
    presence: Presence  # who is online, kept a minute: outlives reloads, as the client does

    @property
    def metrics(self) -> Metrics:
        """The client's metrics: counts outlive reloads, as the client does."""
        return self.handoff.client.metrics

    def reloaded(self, config: Config, poster: Poster) -> Services:
        """The services of a new config, keeping what outlives it: the Bitrix24 client and
        its locks, the storage (and with it the buttons in flight), who is online, and the
        announcer if the team chat is the same."""
        fresh = Services.build(config, self.handoff, poster, self.storage, self.presence)
        fresh.pending.unstored = self.pending.unstored  # messages still being stored
        if config.announce_to != self.config.announce_to:
            return fresh
        return dataclasses.replace(fresh, announcer=self.announcer)

    @classmethod
    def build(
        cls,
        config: Config,
        handoff: Handoff,
        poster: Poster,
        storage: Storage | None = None,
        presence: Presence | None = None,
    ) -> Services:
        """Wire the services of ``config`` around the transfer workflow, a poster, the
        storage (opened from the config when not given) and who is online (asked through the
        workflow's client when not given). Counts go to the client's metrics."""
        directory = Directory.from_config(config)
        messages = Messages(config.messages, config.admin_contact)
        storage = storage or open_storage(config.storage, boot=uuid.uuid4().hex)
        pending = PendingStore(storage, expiry_s=config.button_expiry_min * 60)
        announcer = None
        if config.announce_to is not None:
            team_chat = config.announce_to
            announcer = Announcer(
                team_chat,
                poster,
                remember=lambda message_id, refs: pending.remember((team_chat, message_id), refs),
                metrics=handoff.client.metrics,
            )
        return cls(
            config=config,
            directory=directory,
            access=AccessPolicy(config),
            handoff=handoff,
            replies=Replies(messages, directory),
            pending=pending,
            announcer=announcer,
            storage=storage,
            presence=presence or Presence(handoff.client),
        )
