"""The Parquet layout of log events, shared by the export and the archive, so that files of
either can be read together (hashes as binary, JSON columns as text)."""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
EVENT_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("idem_hash", pa.binary()),
        ("idempotency_key", pa.string()),
        ("kind", pa.string()),
        ("event_name", pa.string()),
        ("payload_version", pa.string()),
        ("batch_index", pa.int32()),
        ("batch_info", pa.string()),
        ("received_at", TIMESTAMP),
        ("secret_id", pa.string()),
        ("body_sha256", pa.binary()),
        ("phone_number_id", pa.string()),
        ("conversation_id", pa.string()),
        ("message_id", pa.string()),
        ("payload", pa.string()),
        ("parse_error", pa.string()),
    ]
)
DELIVERY_SCHEMA = pa.schema(
    [
        ("body_sha256", pa.binary()),
        ("received_at", TIMESTAMP),
        ("kind", pa.string()),
        ("headers", pa.string()),
        ("body", pa.binary()),
        ("key_is_body_sha256", pa.bool_()),
    ]
)
