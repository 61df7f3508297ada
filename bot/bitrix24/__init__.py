"""Bitrix24 REST: the client, its errors and the codes it knows. Nothing here knows Telegram."""
