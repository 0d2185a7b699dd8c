"""The marts on a few hand-written read-model rows whose answers are known."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from analytics import export, warehouse

PN = "100200300"


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 1, 10, minute, second, tzinfo=UTC)


MESSAGES = [
    # id, conversation, direction, template, category, message_at, sent, delivered, read, failed,
    # status, error code, error title
    (
        "wamid.in",
        "conv-1",
        "inbound",
        None,
        None,
        at(0),
        None,
        None,
        None,
        None,
        "received",
        None,
        None,
    ),
    (
        "wamid.ok",
        "conv-1",
        "outbound",
        "order_update",
        "utility",
        at(1),
        at(1),
        at(1, 2),
        at(2, 2),
        None,
        "read",
        None,
        None,
    ),
    (
        "wamid.fail",
        "conv-1",
        "outbound",
        None,
        None,
        at(3),
        None,
        None,
        None,
        at(3, 5),
        "failed",
        131026,
        "Message undeliverable",
    ),
]


async def test_marts_compute_known_answers(database, tmp_path):
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "INSERT INTO conversations (id, phone_number_id, status, created_at, last_active_at,"
            " ended_at, inbound_count, outbound_count, updated_position, updated_at)"
            " VALUES ('conv-1', $1, 'ended', $2, $3, $4, 1, 2, 1, $4)",
            PN,
            at(0),
            at(3, 5),
            at(30),
        )
        await conn.executemany(
            "INSERT INTO messages (id, conversation_id, phone_number_id, direction,"
            " template_name, pricing_category, message_at, sent_at, delivered_at, read_at,"
            " failed_at, status, error_code, error_title, updated_position, updated_at)"
            " VALUES ($1, $2, $14, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $6)",
            [(*row, PN) for row in MESSAGES],
        )
    finally:
        await conn.close()
    await export.export_once(database, tmp_path)

    con = warehouse.connect(tmp_path)
    try:

        def rows(query: str) -> list[tuple]:
            return con.execute(query).fetchall()

        assert rows("SELECT stage, seconds FROM message_latencies ORDER BY stage") == [
            ("delivered_to_read", 60),
            ("sent_to_delivered", 2),
            ("sent_to_read", 62),
        ]
        assert rows(
            "SELECT messages, sent, delivered, read, failed, delivery_rate, read_rate"
            " FROM delivery_funnel"
        ) == [(2, 1, 1, 1, 1, 0.5, 1.0)]
        assert rows(
            "SELECT error_code, error_title, failures, share_of_failures FROM failures_by_error"
        ) == [(131026, "Message undeliverable", 1, 1.0)]
        assert rows(
            "SELECT template, pricing_category, messages, read, read_rate"
            " FROM read_rate_by_template"
        ) == [("order_update", "utility", 1, 1, 1.0)]
        assert rows("SELECT replied, response_seconds FROM first_responses") == [(True, 60)]
        assert rows(
            "SELECT active_minutes, duration_minutes, messages FROM conversation_durations"
        ) == [(3 + 5 / 60, 30.0, 3)]
    finally:
        con.close()
