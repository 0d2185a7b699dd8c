"""Typed application keys: everything the handlers share lives on the app, not in modules."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from service.log.writer import LogWriter
from service.projections.process import ProjectorProcess
from service.projections.runner import Projector
from service.settings import Settings
from service.webhooks.signature import Keyring

settings = web.AppKey("settings", Settings)
dsn = web.AppKey("dsn", str)
pool = web.AppKey("pool", asyncpg.Pool)
writer = web.AppKey("writer", LogWriter)
keyring = web.AppKey("keyring", Keyring)
meta_keyring = web.AppKey("meta_keyring", Keyring)  # META_APP_SECRET, when set
projector = web.AppKey("projector", Projector)
projector_process = web.AppKey("projector_process", ProjectorProcess)

# per-request values, set by handlers and read by the logging middleware
request_id = web.RequestKey("request_id", str)
stored = web.RequestKey("stored", int)
duplicates = web.RequestKey("duplicates", int)
signature_failure = web.RequestKey("signature_failure", bool)
