"""structlog set-up: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

_min_level = logging.NOTSET  # structlog's default configuration keeps every line


def enabled(level: int) -> bool:
    """Whether lines at `level` pass the configured filter: a cheap check for hot paths."""
    return level >= _min_level


def configure(level: str = "info", fmt: str = "json") -> None:
    global _min_level
    _min_level = getattr(logging, level.upper())
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_min_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
