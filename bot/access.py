"""Who may use the bot where: supervisors, in private chats and in the configured groups."""

from __future__ import annotations

from enum import StrEnum

from bot.config import Config


class Verdict(StrEnum):
    """What to do with a command from someone, somewhere."""

    ALLOW = "allow"
    REFUSE = "refuse"  # not a supervisor: one polite line with their user ID
    WRONG_CHAT = "wrong_chat"  # a supervisor in a group the config does not list
    IGNORE = "ignore"  # a stranger in an unlisted group: stay silent, no spam


class AccessPolicy:
    """Supervisors by Telegram user ID; groups by chat ID; both from config."""

    def __init__(self, config: Config) -> None:
        self.supervisors = {person.id: person.name for person in config.supervisors}
        self.chats = {chat.id for chat in config.chats}
        self.admins = {person.id for person in config.admins} or set(self.supervisors)

    def decide(self, user_id: int, chat_id: int, private: bool) -> Verdict:
        """The verdict for ``user_id`` writing in ``chat_id``."""
        supervisor = user_id in self.supervisors
        if private or chat_id in self.chats:
            return Verdict.ALLOW if supervisor else Verdict.REFUSE
        return Verdict.WRONG_CHAT if supervisor else Verdict.IGNORE

    def is_admin(self, user_id: int) -> bool:
        """Whether ``user_id`` may reload the config (``admins:``, else every supervisor)."""
        return user_id in self.admins

    def name_of(self, user_id: int) -> str | None:
        """The supervisor's name as the config spells it."""
        return self.supervisors.get(user_id)
