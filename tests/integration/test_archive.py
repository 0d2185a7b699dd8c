"""Archiving months of history: Parquet out, verified, then dropped; everything keeps working."""

import asyncio
import subprocess
import sys
from datetime import UTC, date, datetime

import duckdb
import pyarrow.parquet as pq
import pytest

from service.db import Q
from service.log import archive, layout
from service.projections import runner
from service.webhooks import kapso
from tests import support

OLD = datetime(2025, 1, 15, 12, tzinfo=UTC)


def old_body(i: int) -> bytes:
    return support.dumps(
        {
            "message": {
                "id": f"wamid.OLD{i}",
                "timestamp": "1736942400",
                "kapso": {"direction": "inbound"},
            },
            "conversation": {"id": "conv-old"},
            "phone_number_id": "1",
        }
    )


async def append_old(pool, i: int) -> None:
    """Append through the real append function, as if received in January 2025."""
    delivery, events = kapso.parse_delivery(
        old_body(i), {"X-Webhook-Event": "whatsapp.message.received"}, "sid", OLD
    )
    await pool.fetch(Q["append_batch"], [delivery], events)


def test_only_older_monthly_partitions_are_chosen():
    names = ["events_default", "events_2024_12", "events_2025_01", "events_2025_02", "x_2025_01"]
    assert archive.month_partitions(names, date(2025, 2, 1)) == [
        ("events_2024_12", date(2024, 12, 1)),
        ("events_2025_01", date(2025, 1, 1)),
    ]


async def test_archive_moves_a_month_out_and_keeps_the_rest_working(sink, tmp_path):
    await sink.pool.execute("SELECT kapso_sink_ensure_month('2025-01-01')")
    for i in range(25):
        await append_old(sink.pool, i)
    raw, headers = support.delivery({"message": {"id": "wamid.NEW"}, "conversation": {"id": "c"}})
    await sink.post(raw, headers)
    await runner.catch_up(sink.pool)
    assert await sink.pool.fetchval("SELECT count(*) FROM events_2025_01") == 25

    out = tmp_path / "archive"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "archive",
        "--before",
        "2025-02",
        "--dir",
        str(out),
        env={
            **__import__("os").environ,
            "DATABASE_URL": sink.dsn,
            "KAPSO_SINK_DATA_DIR": str(tmp_path),
            "KAPSO_SINK_LOG_LEVEL": "warning",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert "archived events_2025_01: 25 events, 25 deliveries" in stdout.decode()

    con = duckdb.connect()
    rows = con.execute(
        "SELECT count(*), min(message_id), max(received_at) FROM read_parquet(?)",
        [str(out / "events_2025_01.parquet")],
    ).fetchone()
    bodies = con.execute(
        "SELECT count(*), min(octet_length(body)) FROM read_parquet(?)",
        [str(out / "deliveries_2025_01.parquet")],
    ).fetchone()
    con.close()
    assert rows[0] == 25 and rows[1] == "wamid.OLD0"
    assert bodies == (25, len(old_body(0)))
    # the export's layout (hashes as binary), so archived and exported events read together
    archived = pq.read_table(out / "events_2025_01.parquet")
    assert archived.schema.remove_metadata().equals(layout.EVENT_SCHEMA)
    keys = await sink.pool.fetch(
        "SELECT idem_hash FROM event_keys WHERE received_at < '2025-02-01'"
    )
    assert set(archived.column("idem_hash").to_pylist()) == {r["idem_hash"] for r in keys}

    partitions = {r["name"] for r in await sink.pool.fetch(Q["list_partitions"])}
    assert "events_2025_01" not in partitions
    assert await sink.pool.fetchval("SELECT count(*) FROM events") == 1
    recorded = await sink.pool.fetchrow("SELECT * FROM archives")
    assert (recorded["events"], recorded["deliveries"]) == (25, 25)
    # read models stay, the API keeps answering, and a replay of an archived event is a duplicate
    assert (await sink.get("/v1/messages/wamid.OLD3"))[0] == 200
    await append_old(sink.pool, 3)
    assert await sink.pool.fetchval("SELECT count(*) FROM events") == 1
    status, doc, _ = await sink.get("/v1/events")
    assert status == 200 and [e["message_id"] for e in doc["events"]] == ["wamid.NEW"]
    # and the log is still append-only outside the archive command
    with pytest.raises(Exception, match="append-only"):
        await sink.pool.execute("DELETE FROM deliveries")


async def test_nothing_is_removed_when_the_files_do_not_match(sink, tmp_path, monkeypatch):
    await sink.pool.execute("SELECT kapso_sink_ensure_month('2025-01-01')")
    await append_old(sink.pool, 1)
    monkeypatch.setattr(archive, "_parquet_checksum", lambda path, rows: (rows, "tampered"))
    with pytest.raises(archive.ArchiveError):
        await archive.archive_before(sink.pool, date(2025, 2, 1), tmp_path)
    assert await sink.pool.fetchval("SELECT count(*) FROM events_2025_01") == 1
    assert await sink.pool.fetchval("SELECT count(*) FROM archives") == 0
