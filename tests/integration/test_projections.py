"""The projector over real HTTP ingestion and a real database."""

import asyncio
import functools
import subprocess
import sys

import pytest

from analytics import simulator
from service import db, keys
from service.db import Q
from service.projections import facts, runner
from tests import support

CONV = "conv-proj-1"
WAMID = "wamid.PROJ1"


def statuses(*entries):
    return [
        {"id": WAMID, "status": s, "timestamp": str(t), "recipient_id": "15551234567", **x}
        for s, t, x in entries
    ]


def outbound(event, entries, *, updated_at="2025-10-28T14:31:00Z", status="active", kapso=None):
    conversation = {
        "id": CONV,
        "phone_number": "+15551234567",
        "status": status,
        "created_at": "2025-10-28T13:40:00Z",
        "updated_at": updated_at,
        "last_active_at": updated_at,
        "phone_number_id": "123",
    }
    if kapso is not None:
        conversation["kapso"] = kapso
    return {
        "message": {
            "id": WAMID,
            "timestamp": entries[-1][1],
            "type": "template",
            "template": {"name": "order_update"},
            "kapso": {
                "direction": "outbound",
                "status": event.rsplit(".", 1)[1],
                "origin": "cloud_api",
                "statuses": statuses(*entries),
            },
        },
        "conversation": conversation,
        "phone_number_id": "123",
    }


SENT = ("sent", 1730092860, {"pricing": {"category": "utility"}})
DELIVERED = ("delivered", 1730092888, {})
READ = ("read", 1730093021, {})
FAILED = ("failed", 1730093200, {"errors": [{"code": 131049, "title": "Not delivered"}]})


async def project(sink):
    await runner.catch_up(sink.pool)


async def test_receipts_in_any_arrival_order(sink):
    await sink.send(outbound("whatsapp.message.read", [SENT, READ]), event="whatsapp.message.read")
    await project(sink)
    status, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert status == 200
    assert doc["status"] == "read" and doc["read_without_delivered"] is True
    assert doc["sent_at"] == "2024-10-28T05:21:00Z"
    assert doc["read_at"] == "2024-10-28T05:23:41Z"
    await sink.send(
        outbound("whatsapp.message.delivered", [SENT, DELIVERED]),
        event="whatsapp.message.delivered",
    )
    await sink.send(outbound("whatsapp.message.sent", [SENT]), event="whatsapp.message.sent")
    await project(sink)
    status, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert doc["status"] == "read" and doc["read_without_delivered"] is False
    assert doc["delivered_at"] == "2024-10-28T05:21:28Z"
    assert doc["pricing_category"] == "utility" and doc["template_name"] == "order_update"
    assert doc["conversation_id"] == CONV and doc["direction"] == "outbound"


async def test_failed_is_terminal_and_a_refetched_fact_changes_nothing(sink):
    failed = outbound("whatsapp.message.failed", [SENT, FAILED])
    await sink.send(failed, event="whatsapp.message.failed")
    await sink.send(
        outbound("whatsapp.message.delivered", [SENT, DELIVERED]),
        event="whatsapp.message.delivered",
    )
    await project(sink)
    _, first, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert first["status"] == "failed" and first["error_code"] == 131049
    assert first["error_title"] == "Not delivered"
    # the same fact again under another body (e.g. batch fallback re-sent it): no change
    failed["message"]["kapso"]["content"] = "re-sent"
    assert (await sink.send(failed, event="whatsapp.message.failed"))[1]["stored"] == 1
    await project(sink)
    _, again, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert {k: v for k, v in again.items() if k != "updated_at"} == {
        k: v for k, v in first.items() if k != "updated_at"
    }


async def test_conversation_rules(sink):
    await sink.send(
        outbound("whatsapp.message.sent", [SENT], kapso={"contact_name": "Ana Ruiz"}),
        event="whatsapp.message.sent",
    )
    ended = {
        "conversation": {
            "id": CONV,
            "status": "ended",
            "updated_at": "2025-10-28T15:10:45Z",
            "last_active_at": "2025-10-28T15:10:45Z",
            "phone_number_id": "123",
        },
        "phone_number_id": "123",
    }
    await sink.send(ended, event="whatsapp.conversation.ended")
    # a late event carrying an older, active snapshot and no kapso block
    await sink.send(
        outbound(
            "whatsapp.message.delivered", [SENT, DELIVERED], updated_at="2025-10-28T14:31:28Z"
        ),
        event="whatsapp.message.delivered",
    )
    inbound = {
        "message": {
            "id": "wamid.IN1",
            "timestamp": "1730092800",
            "type": "text",
            "kapso": {"direction": "inbound"},
        },
        "conversation": {"id": CONV, "status": "active", "updated_at": "2025-10-28T14:25:01Z"},
        "phone_number_id": "123",
    }
    await sink.send(inbound)
    await sink.send(inbound, key="another-key")  # same fact, new key: stored once
    inactive = {
        "conversation": {"id": CONV, "status": "active", "updated_at": "2025-10-28T13:00:00Z"},
        "since_message": {"created_at": "2025-10-28T13:00:00Z"},
        "inactivity": {"minutes": 60},
        "phone_number_id": "123",
    }
    await sink.send(inactive, event="whatsapp.conversation.inactive")
    await project(sink)
    status, doc, _ = await sink.get(f"/v1/conversations/{CONV}")
    assert status == 200
    assert doc["status"] == "ended" and doc["ended_at"] == "2025-10-28T15:10:45Z"
    assert doc["contact_name"] == "Ana Ruiz" and doc["contact_phone"] == "15551234567"
    assert (doc["inbound_count"], doc["outbound_count"]) == (1, 1)
    assert doc["last_inactivity"] == {"at": "2025-10-28T14:00:00Z", "minutes": 60}
    assert doc["last_message_id"] == WAMID and doc["created_at"] == "2025-10-28T13:40:00Z"
    status, page, _ = await sink.get(f"/v1/conversations/{CONV}/messages")
    assert [m["id"] for m in page["messages"]] == ["wamid.IN1", WAMID]


async def test_unknown_and_unparseable_events_are_counted_not_projected(sink):
    await sink.send({"whatever": 1}, event="whatsapp.something.new")
    await sink.send(b"not json", event="whatsapp.message.sent")
    await project(sink)
    _, doc, _ = await sink.get("/v1/projections")
    by_name = {p["name"]: p for p in doc["projections"]}
    assert by_name["messages"]["skipped"] == 2 and by_name["conversations"]["skipped"] == 2
    assert (
        by_name["messages"]["lag_events"] == 0
        and by_name["messages"]["position"] == by_name["messages"]["head"]
    )
    assert await sink.pool.fetchval("SELECT count(*) FROM messages") == 0


async def table(pool, name):
    return [dict(r) for r in await pool.fetch(f"SELECT * FROM {name} ORDER BY id")]


async def test_rebuild_equals_the_running_projector(database, tmp_path):
    settings = support.make_settings(tmp_path, KAPSO_SINK_PROJECTOR=True)
    sink = await support.start_sink(database, settings)
    try:
        deliveries = simulator.generate(12, 7, support.SECRET)
        result = await simulator.send(sink.url + "/webhooks/kapso", deliveries, progress=False)
        assert set(result) == {200}
        head = await sink.pool.fetchval("SELECT max(position) FROM events")
        # the running projector catches up on its own
        await support.wait_until(lambda: _caught_up(sink.pool, head))
        before = {n: await table(sink.pool, n) for n in ("conversations", "messages")}
        assert len(before["messages"]) > 50 and len(before["conversations"]) == 12
        await runner.rebuild(sink.pool)
        after = {n: await table(sink.pool, n) for n in ("conversations", "messages")}
        assert after == before
        # and through the CLI, as an operator runs it
        env = {**sink_env(settings), "DATABASE_URL": database}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "rebuild",
            "messages",
            "--no-progress",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert "rebuilt messages" in out.decode()
        assert await table(sink.pool, "messages") == before["messages"]
    finally:
        await support.stop_sink(sink)


async def _caught_up(pool, head) -> bool:
    return await pool.fetchval("SELECT min(position) FROM projection_checkpoints") >= head


def sink_env(settings):
    import os

    return {
        **os.environ,
        "KAPSO_SINK_DATA_DIR": str(settings.data_dir),
        "KAPSO_WEBHOOK_SECRETS": support.SECRET,
        "KAPSO_SINK_LOG_LEVEL": "warning",
    }


async def test_projector_keeps_up_with_concurrent_writers(sink):
    stop = asyncio.Event()

    async def keep_projecting():
        while not stop.is_set():
            await runner.catch_up(sink.pool, limit=7)
            await asyncio.sleep(0)

    projector = asyncio.create_task(keep_projecting())
    bodies = [
        {
            "message": {
                "id": f"wamid.C{i}",
                "timestamp": "1730092800",
                "kapso": {"direction": "inbound"},
            },
            "conversation": {"id": f"conv-{i % 5}"},
        }
        for i in range(300)
    ]
    await asyncio.gather(*(sink.send(b) for b in bodies))
    stop.set()
    await projector
    await runner.catch_up(sink.pool)
    assert await sink.pool.fetchval("SELECT count(*) FROM messages") == 300
    counts = await sink.pool.fetch("SELECT inbound_count FROM conversations ORDER BY id")
    assert [r["inbound_count"] for r in counts] == [60] * 5


async def test_exactly_one_leader_and_takeover(database):
    pools = [await db.create_pool(database, size=2) for _ in range(2)]
    projectors = [runner.Projector(p, database, poll_interval=0.1) for p in pools]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(p.run(s)) for p, s in zip(projectors, stops, strict=True)]
    try:
        await support.wait_until(lambda: any(p.is_leader for p in projectors), 10)
        await asyncio.sleep(0.3)  # give the standby several chances to (wrongly) lead
        assert sum(p.is_leader for p in projectors) == 1
        leader = next(i for i, p in enumerate(projectors) if p.is_leader)
        stops[leader].set()
        await tasks[leader]
        await support.wait_until(lambda: projectors[1 - leader].is_leader, 10)
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(*tasks)
        for p in pools:
            await p.close()


@pytest.mark.parametrize(
    "path", ["/v1/messages/nope", "/v1/conversations/nope", "/v1/conversations/nope/messages"]
)
async def test_unknown_ids_are_404(sink, path):
    status, doc, _ = await sink.get(path)
    assert status == 404 and doc["error"] == "not_found"


async def test_status_history_extraction_ignores_odd_entries(sink):
    body = outbound("whatsapp.message.delivered", [SENT, DELIVERED])
    body["message"]["kapso"]["statuses"] += [
        1,
        "x",
        None,
        {"status": "read"},  # no timestamp
        {"id": "wamid.OTHER", "status": "read", "timestamp": "1730099999"},  # another message
        {"id": WAMID, "status": "read", "timestamp": "soon"},
        {"id": WAMID, "status": "read", "timestamp": "173009999999"},  # 12 digits
        {"id": WAMID, "status": "read", "timestamp": "\uff11\uff17\uff13\uff10"},  # not ASCII
        {"id": WAMID, "status": "read", "timestamp": " 1730099999"},
        {"id": WAMID, "status": "read", "timestamp": ""},
        {"id": WAMID, "status": "failed", "timestamp": "1730099999", "errors": [{"code": "x"}]},
        {"status": "sent", "timestamp": "1730000000"},  # no id: this message's, and earlier
    ]
    await sink.send(body, event="whatsapp.message.delivered")
    await sink.send(
        {
            "message": {
                "id": "wamid.ODD",
                "kapso": {"statuses": {"not": "a list"}},
                "timestamp": 12,
            },
            "conversation": ["not", "an", "object"],
        },
        event="whatsapp.message.sent",
    )
    await project(sink)
    _, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert doc["read_at"] is None and doc["sent_at"] == "2024-10-27T03:33:20Z"
    assert doc["status"] == "failed" and doc["error_code"] is None
    status, odd, _ = await sink.get("/v1/messages/wamid.ODD")
    assert status == 200 and odd["status"] == "sent" and odd["conversation_id"] is None
    assert odd["sent_at"] == "1970-01-01T00:00:12Z"  # a JSON number of seconds counts too


async def test_times_are_right_whatever_datestyle_the_database_sets(database, sink):
    # the input query hands times over as text; the pool asks for DateStyle ISO
    async with sink.pool.acquire() as conn:
        db_name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"ALTER DATABASE \"{db_name}\" SET DateStyle = 'SQL, DMY'")
    await sink.send(outbound("whatsapp.message.read", [SENT, READ]), event="whatsapp.message.read")
    pool = await db.create_pool(database, size=3)  # new sessions get the database's default
    try:
        assert await pool.fetchval("SELECT now()::text LIKE '____-__-__ %'")
        await runner.catch_up(pool)
    finally:
        await pool.close()
    _, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert doc["sent_at"] == "2024-10-28T05:21:00Z" and doc["read_at"] == "2024-10-28T05:23:41Z"


async def test_the_folds_know_the_input_query_s_columns_in_order(sink):
    # facts read input rows by position: a column added, dropped or moved in the query must
    # be matched in facts.INPUT_COLUMNS
    async with sink.pool.acquire() as conn:
        statement = await conn.prepare(Q["fetch_projection_input"])
        columns = tuple(a.name for a in statement.get_attributes())
    assert columns == facts.INPUT_COLUMNS


async def append_received(conn, prefix: str, count: int) -> None:
    """Append `count` minimal received-message events (ids prefix1..prefixN) straight to the log."""
    await conn.execute(
        "INSERT INTO events (idem_hash, kind, event_name, received_at, secret_id,"
        " body_sha256, message_id, payload) SELECT sha256(($1 || i)::bytea), 'kapso',"
        " 'whatsapp.message.received', now(), 'test', sha256('b'::bytea),"
        " $1 || i, jsonb_build_object('message', jsonb_build_object('id', $1 || i))"
        " FROM generate_series(1, $2::int) i",
        prefix,
        count,
    )


async def test_batch_queries_are_planned_for_their_arguments(database):
    """A generic plan cached while `messages` was empty would seq-scan it for ever after."""
    pool = await db.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            for batch in range(8):
                await append_received(conn, f"wamid.plan{batch}.", 20)
                await runner.project_batch(conn)
            plans = await conn.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement = $1",
                db.Q["load_messages"],
            )
        assert plans and plans[0]["custom_plans"] == 8 and plans[0]["generic_plans"] == 0
        assert await pool.fetchval("SELECT count(*) FROM messages") == 160
    finally:
        await pool.close()


async def test_a_batch_sets_its_settings_for_its_own_transaction_only(database):
    """The statement that locks a batch's checkpoints also sets, for that transaction only,
    custom plans and commits without a WAL flush; the connection's own settings stay."""
    pool = await db.create_pool(database, size=1)
    setting = "SELECT current_setting('synchronous_commit'), current_setting('plan_cache_mode')"
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                locked = await conn.fetch(db.Q["lock_checkpoints"], list(runner.NAMES))
                assert [r["name"] for r in locked] == sorted(runner.NAMES)
                assert tuple(await conn.fetchrow(setting)) == ("off", "force_custom_plan")
            assert tuple(await conn.fetchrow(setting)) == ("on", "auto")
    finally:
        await pool.close()


async def test_a_conversation_a_message_moves_away_from_is_recounted_to_zero(sink):
    """Folds keep the smaller of two conversation ids, so a message can move; the one it
    left must not keep counting it (the same as a rebuild says)."""

    def inbound(conversation: str) -> dict:
        return {
            "message": {
                "id": "wamid.MOVES",
                "timestamp": "1730092800",
                "kapso": {"direction": "inbound"},
            },
            "conversation": {"id": conversation, "status": "active"},
            "phone_number_id": "123",
        }

    await sink.send(inbound("conv-z"))
    await project(sink)
    _, left, _ = await sink.get("/v1/conversations/conv-z")
    assert (left["inbound_count"], left["last_message_id"]) == (1, "wamid.MOVES")
    await sink.send(inbound("conv-a"), event="whatsapp.message.received")
    await project(sink)
    _, left, _ = await sink.get("/v1/conversations/conv-z")
    _, joined, _ = await sink.get("/v1/conversations/conv-a")
    assert (left["inbound_count"], left["last_message_id"]) == (0, None)
    assert (joined["inbound_count"], joined["last_message_id"]) == (1, "wamid.MOVES")
    live = await sink.pool.fetch("SELECT * FROM conversations ORDER BY id")
    await runner.rebuild(sink.pool)
    assert await sink.pool.fetch("SELECT * FROM conversations ORDER BY id") == live


async def test_a_live_projector_folds_a_steady_stream_in_few_large_batches(database):
    """Under steady load the leader waits and folds what arrived meanwhile in one batch; it
    does not chase the head with a batch per handful of events."""
    from datetime import UTC, datetime

    from service.log.writer import LogWriter
    from service.webhooks import kapso

    pool = await db.create_pool(database, size=6)
    writer = LogWriter(pool, commit_timeout=9.0)
    writer.start()
    projector = runner.Projector(pool, database, min_interval=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    sent = 0

    async def produce(tag: str, until: float) -> None:
        nonlocal sent
        while asyncio.get_running_loop().time() < until:
            body = support.dumps(
                {"message": {"id": f"wamid.STREAM-{tag}-{sent}", "kapso": {"direction": "inbound"}}}
            )
            headers = {"X-Webhook-Event": "whatsapp.message.received"}
            sent += 1
            await writer.append(*kapso.parse_delivery(body, headers, "sid", datetime.now(UTC)))

    try:
        await support.wait_until(lambda: projector.is_leader, 10)
        until = asyncio.get_running_loop().time() + 1.5
        await asyncio.gather(*(produce(str(n), until) for n in range(4)))
        await support.wait_until(lambda: projector.events == sent, 10)
        assert sent > 100
        # about one batch per min_interval (0.2 s) over 1.5 s; chasing the head would take one
        # per commit, hundreds
        assert projector.batches <= 20, (projector.batches, sent)
    finally:
        stop.set()
        await task
        await writer.close()
        await pool.close()


async def test_after_a_quiet_spell_the_first_event_is_folded_at_once(database, tmp_path):
    """KAPSO_SINK_PROJECTOR_INTERVAL spaces batches under load only: an event arriving after
    the log was quiet for longer than the interval is folded without waiting for it."""
    settings = support.make_settings(
        tmp_path, KAPSO_SINK_PROJECTOR=True, KAPSO_SINK_PROJECTOR_INTERVAL=1.5
    )
    sink = await support.start_sink(database, settings)
    try:
        projector = sink.server.app[keys.projector]
        assert projector.min_interval == 1.5  # the setting reaches the running projector
        await support.wait_until(lambda: projector.is_leader, 10)
        await sink.send({"message": {"id": "wamid.QUIET-1"}}, event="whatsapp.message.received")
        await support.wait_until(lambda: projector.events == 1, 10)
        await asyncio.sleep(1.6)
        sent = asyncio.get_running_loop().time()
        await sink.send({"message": {"id": "wamid.QUIET-2"}}, event="whatsapp.message.received")
        await support.wait_until(lambda: projector.events == 2, 10)
        assert asyncio.get_running_loop().time() - sent < 1.0
        # while a third, sent right after, waits for the rest of the interval
        sent = asyncio.get_running_loop().time()
        await sink.send({"message": {"id": "wamid.QUIET-3"}}, event="whatsapp.message.received")
        await support.wait_until(lambda: projector.events == 3, 10)
        assert asyncio.get_running_loop().time() - sent > 0.7
    finally:
        await support.stop_sink(sink)


async def test_counts_kept_batch_by_batch_equal_a_fresh_count(sink):
    """Counts move by per-batch deltas; in tiny batches and shuffled arrival order (receipts
    before sends, messages before their conversation's row) they still equal a recount."""
    import random

    from service.db import Q

    deliveries = simulator.generate(6, 9, support.SECRET)
    random.Random(3).shuffle(deliveries)
    result = await simulator.send(sink.url + "/webhooks/kapso", deliveries, progress=False)
    assert set(result) == {200}
    while await runner.catch_up(sink.pool, limit=3):
        pass
    live = await table(sink.pool, "conversations")
    assert sum(c["inbound_count"] + c["outbound_count"] for c in live) > 30
    await sink.pool.execute(Q["refresh_all_conversation_counts"])
    assert await table(sink.pool, "conversations") == live


async def test_the_last_message_is_the_newest_timed_one_else_the_highest_id(sink):
    def inbound(wamid: str, timestamp: str | None) -> dict:
        message = {"id": wamid, "kapso": {"direction": "inbound"}}
        if timestamp is not None:
            message["timestamp"] = timestamp
        return {"message": message, "conversation": {"id": "conv-last"}}

    async def last() -> tuple:
        await project(sink)
        _, doc, _ = await sink.get("/v1/conversations/conv-last")
        return doc["inbound_count"], doc["last_message_id"], doc["last_message_at"]

    await sink.send(inbound("wamid.B", None))
    await sink.send(inbound("wamid.C", None))
    assert await last() == (2, "wamid.C", None)
    await runner.rebuild(sink.pool)  # the rebuild's recount of every conversation agrees
    assert await last() == (2, "wamid.C", None)
    await sink.send(inbound("wamid.A", "1730092800"))
    assert await last() == (3, "wamid.A", "2024-10-28T05:20:00Z")
    await sink.send(inbound("wamid.0", "1730092700"))  # older: not the last
    assert await last() == (4, "wamid.A", "2024-10-28T05:20:00Z")
    await runner.rebuild(sink.pool)
    assert await last() == (4, "wamid.A", "2024-10-28T05:20:00Z")


async def simulated_and_projected(sink, conversations: int, seed: int) -> dict:
    """Send a simulated day, project it live; return both read models as rows."""
    deliveries = simulator.generate(conversations, seed, support.SECRET)
    result = await simulator.send(sink.url + "/webhooks/kapso", deliveries, progress=False)
    assert set(result) == {200}
    await project(sink)
    return await models(sink.pool)


async def models(pool) -> dict:
    return {n: await table(pool, n) for n in ("conversations", "messages")}


async def test_a_rebuild_folds_the_models_side_by_side_in_many_batches(sink):
    live = await simulated_and_projected(sink, 8, 5)
    assert sink.pool.get_max_size() > 2  # room for a reader and a connection per model
    head = await sink.pool.fetchval("SELECT max(position) FROM events")
    seen = []
    assert await runner.rebuild(sink.pool, limit=7, progress=seen.append) == head
    assert sum(seen) == head and len(seen) > 10
    assert await models(sink.pool) == live


async def test_a_rebuild_looks_up_rows_another_projector_wrote_during_it(sink):
    """The rebuild skips looking up rows it has not written (tables start empty). Another
    projector taking a turn writes rows it does not know of: from then on it looks up all."""
    from service.db import Q
    from service.projections.seen import SeenIds

    other = {"message": {"id": "wamid.OTHER", "kapso": {"direction": "inbound"}}}
    await sink.send(other, event="whatsapp.message.received")
    await sink.send(outbound("whatsapp.message.sent", [SENT]), event="whatsapp.message.sent")
    delivered = outbound("whatsapp.message.delivered", [DELIVERED])  # no sent entry in it
    await sink.send(delivered, event="whatsapp.message.delivered")
    await project(sink)
    live = await table(sink.pool, "messages")
    assert {m["id"]: m["sent_at"] is not None for m in live} == {WAMID: True, "wamid.OTHER": False}
    async with sink.pool.acquire() as conn:
        await conn.execute(Q["truncate_messages"])
        await conn.execute(Q["reset_checkpoint"], "messages")
        seen = {"messages": SeenIds(capacity=10)}
        fold = functools.partial(runner.project_batch, conn, ["messages"], limit=1, counts=False)
        assert await fold(seen=seen) == 1  # the rebuild: wamid.OTHER
        assert await fold() == 1  # another projector's turn: the send of wamid.PROJ1
        assert await fold(seen=seen) == 1  # the rebuild again: its delivery
        assert await fold(seen=seen) == 0
    assert not seen["messages"].valid
    assert await table(sink.pool, "messages") == live  # the send's sent_at was not lost


async def test_a_new_row_found_already_there_is_upserted_instead(sink):
    """New rows go in by COPY. A row that is there after all (written behind the rebuild's
    filter) makes the COPY fail: the batch falls back to the upsert instead of failing."""
    from service.projections.seen import SeenIds

    await sink.send(outbound("whatsapp.message.sent", [SENT]), event="whatsapp.message.sent")
    await sink.pool.execute(
        "INSERT INTO messages (id, status, updated_position, updated_at) "
        "VALUES ($1, 'pending', 0, now())",
        WAMID,
    )
    async with sink.pool.acquire() as conn:
        seen = {"messages": SeenIds(capacity=10)}  # knows of no row: looks nothing up
        fold = functools.partial(runner.project_batch, conn, ["messages"], counts=False)
        assert await fold(seen=seen) == 1
    row = await sink.pool.fetchrow("SELECT * FROM messages WHERE id = $1", WAMID)
    assert row["status"] == "sent" and row["sent_at"] is not None
    assert row["pricing_category"] == "utility" and row["updated_position"] > 0


async def test_a_side_by_side_drain_hands_over_when_another_projector_took_a_turn(sink):
    from service.db import Q

    live = await simulated_and_projected(sink, 6, 8)
    async with sink.pool.acquire() as conn:
        for name in runner.NAMES:
            await conn.execute(Q[f"truncate_{name}"])
            await conn.execute(Q["reset_checkpoint"], name)
        # another projector moved one checkpoint: the shared batch from 0 no longer fits it
        await runner.project_batch(conn, ["conversations"], limit=10)
    head = await sink.pool.fetchval("SELECT max(position) FROM events")
    groups = [[name] for name in sorted(runner.NAMES)]  # side by side, as a rebuild does
    total = await runner._drain(sink.pool, groups, 7, None, counts=False)
    assert 0 < total <= head  # events read: the rest, from the least advanced checkpoint
    await sink.pool.execute(Q["refresh_all_conversation_counts"])
    assert await models(sink.pool) == live


async def test_a_large_batch_hands_the_event_loop_back_while_it_folds(database, monkeypatch):
    """Other tasks run while a batch is folded (the connection reading ahead drains its
    socket meanwhile, so PostgreSQL does not stall), not only when it waits for the database."""
    import dataclasses

    made = []
    model = runner.MODELS["messages"]

    def counted(row):
        made.append(row["position"])
        return model.fact(row)

    monkeypatch.setitem(runner.MODELS, "messages", dataclasses.replace(model, fact=counted))
    pool = await db.create_pool(database, size=1)
    try:
        await append_received(pool, "wamid.y", 2500)
        seen_by_others = set()
        done = asyncio.Event()

        async def other_task():
            while not done.is_set():
                seen_by_others.add(len(made))
                await asyncio.sleep(0)

        other = asyncio.create_task(other_task())
        async with pool.acquire() as conn:
            assert await runner.project_batch(conn, ["messages"], limit=5000) == 2500
        done.set()
        await other
        assert len(made) == 2500
        assert seen_by_others & set(range(1, 2500))  # it ran in the middle of the facts
        assert await pool.fetchval("SELECT count(*) FROM messages") == 2500
    finally:
        await pool.close()
