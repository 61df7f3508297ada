"""aiogram routers: one module per command family, composed here with their middlewares."""

from __future__ import annotations

from aiogram import Router

from handlers import admin, errors, finish, history, info, taps, transfer
from handlers.middlewares import AccessMiddleware, CountCommands, LanguageMiddleware


def build_router() -> Router:
    """The bot's root router: counting, language, then access, then the commands."""
    root = Router(name="handoff")
    for observer in (root.message, root.callback_query):
        observer.middleware(CountCommands())
        observer.middleware(LanguageMiddleware())
        observer.middleware(AccessMiddleware())
    # transfer before info: info's private-chat catch-all must come last
    root.include_routers(
        transfer.build_router(),
        finish.build_router(),
        history.build_router(),
        admin.build_router(),
        taps.build_router(),
        info.build_router(),
        errors.build_router(),
    )
    return root
