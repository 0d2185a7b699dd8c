"""The projector: folds the log into read models, batch by batch, checkpoint in the same tx.

Safety does not depend on how many projectors run: every batch locks the checkpoint rows it
moves (`FOR UPDATE`), reads the events after them, and writes models and checkpoints in that
one transaction, so a crash means harmless reprocessing and two projectors simply take turns.
Because appends commit in position order (see service/log/writer.py), reading
`position > checkpoint` never skips an event that committed late. Efficiency wants one active
projector per database: the leader holds a session advisory lock on a dedicated connection and
a standby retries every second, taking over when the leader's session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import asyncpg
import orjson
import structlog

from service.db import Q
from service.log.writer import NOTIFY_CHANNEL
from service.projections import conversations, facts, messages
from service.projections.seen import SeenIds
from service.settings import PROJECTOR_INTERVAL

log = structlog.get_logger("service.projections")

NAMES = (conversations.NAME, messages.NAME)
_LEADER_LOCK = 7263502
LEADER_APPLICATION = "kapso-sink-projector"
_KNOWN = set(facts.MESSAGE_EVENTS) | facts.CONVERSATION_EVENTS


# the folds hand the event loop back this often: a batch takes tens of milliseconds of Python,
# and meanwhile the socket of the connection reading ahead must be drained, or PostgreSQL
# stalls once it has filled the socket's buffer (a unix socket's holds about 200 kB, a batch
# of input is several MB): on a unix socket, a 1M-event rebuild took about 9% longer without.
# While one model folds, another waits for a reply it cannot read: every 250 events rather
# than 1000, 1M-event rebuilds ran 3 to 7% faster (in two series of interleaved runs)
_YIELD_EVERY = 250


def _json_rows(rows) -> str:
    # one JSON parameter instead of one array per column: encoded in C on both sides
    return orjson.dumps(list(rows)).decode()


def _unknown(row) -> bool:
    return row[facts.UNPARSEABLE] or row[facts.EVENT_NAME] not in _KNOWN


async def fetch_input(conn: asyncpg.Connection, after: int, limit: int) -> list:
    return await conn.fetch(Q["fetch_projection_input"], after, limit)


async def project_batch(
    conn: asyncpg.Connection,
    names=NAMES,
    limit: int = 5000,
    rows_after=None,
    counts=True,
    seen: dict[str, SeenIds] | None = None,
) -> int:
    """Fold the next batch of log events into the named models; return events read.

    `rows_after(position)` may supply the input rows (the drain loop prefetches them).
    `counts=False` leaves conversation counts alone (a rebuild recounts them all at its end).
    `seen` (a rebuild's, per model) spares looking up rows the rebuild has not written.
    """
    async with conn.transaction():
        # locks the checkpoints and sets the batch's settings (see the query's comment)
        checkpoints = {
            r["name"]: r["position"] for r in await conn.fetch(Q["lock_checkpoints"], list(names))
        }
        if not checkpoints:
            return 0
        start = min(checkpoints.values())
        rows = await (rows_after(start) if rows_after else fetch_input(conn, start, limit))
        if not rows:
            return 0
        last = rows[-1]["position"]
        touched: dict[str, tuple[int, int] | None] = {}
        for name, after in sorted(checkpoints.items()):
            known = seen.get(name) if seen else None
            merge_touched(touched, await _project(conn, MODELS[name], rows, after, last, known))
        if touched and counts:
            ids = list(touched)
            deltas = [touched[i] or (0, 0) for i in ids]
            await conn.execute(
                Q["refresh_conversation_counts"],
                ids,
                [d[0] for d in deltas],
                [d[1] for d in deltas],
                [touched[i] is None for i in ids],
            )
        return len(rows)


def merge_touched(into: dict, more: dict) -> None:
    """Add one model's count changes (conversation id -> (inbound, outbound) delta, or None
    for "count afresh") to a batch's; counting afresh wins over any delta."""
    for key, delta in more.items():
        if key in into and (into[key] is None or delta is None):
            into[key] = None
        elif key in into:
            into[key] = (into[key][0] + delta[0], into[key][1] + delta[1])
        else:
            into[key] = delta


@dataclass(frozen=True)
class _Model:
    """How the runner drives one read model: its facts, fold, and named queries."""

    name: str
    fact: Callable
    events: frozenset  # event names this model expects to fold
    key: Callable  # fact -> row id
    fold: Callable  # (state | None, fact) -> state
    from_row: Callable
    to_row: Callable
    touched: Callable  # (states before, changed states) -> {conversation id: delta or None}
    # new rows go in by binary COPY when these are set (see _write_states)
    to_record: Callable | None = None
    columns: tuple | None = None


MODELS = {
    messages.NAME: _Model(
        messages.NAME,
        facts.message_fact,
        frozenset(facts.MESSAGE_EVENTS),
        attrgetter("message_id"),
        messages.apply,
        messages.from_row,
        messages.to_row,
        messages.recount,
        messages.to_record,
        messages.COLUMNS,
    ),
    conversations.NAME: _Model(
        conversations.NAME,
        facts.conversation_fact,
        frozenset(facts.CONVERSATION_EVENTS),
        attrgetter("conversation_id"),
        conversations.apply,
        conversations.from_row,
        conversations.to_row,
        conversations.recount,
    ),
}


async def _project(
    conn, model: _Model, rows, after: int, last: int, seen: SeenIds | None = None
) -> dict:
    """Fold the rows after `after` into one model; write states and checkpoint."""
    if seen is not None and not seen.follows(after):
        seen = None
    folded = []
    skipped = 0
    make, expected = model.fact, model.events
    first = 0
    while first < len(rows) and rows[first][facts.POSITION] <= after:  # another group's batch
        first += 1
    for start in range(first, len(rows), _YIELD_EVERY):
        if start > first:
            await asyncio.sleep(0)
        chunk = rows[start : start + _YIELD_EVERY]
        made = [None if row[facts.UNPARSEABLE] else make(row) for row in chunk]
        for row, fact in zip(chunk, made, strict=True):
            if fact is not None:
                folded.append(fact)
            elif _unknown(row) or row[facts.EVENT_NAME] in expected:
                skipped += 1
    touched: dict = {}
    if folded:
        key_of, fold = model.key, model.fold
        ids = list(dict.fromkeys(map(key_of, folded)))
        lookup = ids if seen is None else seen.to_look_up(ids)
        before = {}
        if lookup:
            rows_before = await conn.fetch(Q[f"load_{model.name}"], lookup)
            before = {r["id"]: model.from_row(r) for r in rows_before}
        states = dict(before)
        get = states.get
        for n, fact in enumerate(folded, 1):
            if not n % _YIELD_EVERY:
                await asyncio.sleep(0)
            key = key_of(fact)
            states[key] = fold(get(key), fact)
        changed = [states[i] for i in ids]
        await _write_states(conn, model, changed, before)
        touched = model.touched(before, changed)
        if seen is not None and seen.valid:
            seen.add(ids)
    await conn.execute(Q["save_checkpoint"], model.name, last, skipped)
    if seen is not None and seen.valid:
        seen.position = last
    return touched


async def _write_states(conn, model: _Model, changed: list, before: dict) -> None:
    """Write a batch's folded states: new rows by binary COPY, the others by upsert.

    A model's rows are written only in a transaction holding its checkpoint row locked.
    `before` holds the batch's rows that were found, and an id that was not looked up (the
    rebuild's filter) cannot exist yet, so a state missing from `before` is a new row. COPY
    spares PostgreSQL what makes the upsert costly for it: parsing JSON and timestamps from
    text, and checking for a conflict. Should a row be there all the same, the batch falls
    back to the upsert.
    """
    if model.to_record is None:
        fresh, rest = [], changed
    else:
        fresh = [s for s in changed if s.id not in before]
        rest = [s for s in changed if s.id in before]
    if fresh:
        # a savepoint, so a failed COPY leaves the batch intact; never released (the commit
        # ends it), which spares a round trip per batch
        await conn.execute("SAVEPOINT fresh_rows")
        try:
            await conn.copy_records_to_table(
                model.name, records=map(model.to_record, fresh), columns=model.columns
            )
        except asyncpg.UniqueViolationError:
            await conn.execute("ROLLBACK TO SAVEPOINT fresh_rows")
            log.warning("projection_copy_conflict", projection=model.name, rows=len(fresh))
            rest = changed
    if rest:
        await conn.execute(Q[f"upsert_{model.name}"], _json_rows(map(model.to_row, rest)))


async def catch_up(pool: asyncpg.Pool, names=NAMES, *, limit: int = 5000, progress=None) -> int:
    """Drain mode: project until a batch comes back short (the log's head as of that read);
    return events read.

    While one batch is folded and written, the next one is already being read on a second
    connection. Stopping at a short batch, rather than reading again until nothing is left,
    matters under live load: the follower then waits and folds what arrived meanwhile in one
    batch, instead of chasing the head with many batches of a few events each.
    """
    return await _drain(pool, [list(names)], limit, progress, counts=True)


async def rebuild(pool: asyncpg.Pool, names=NAMES, *, limit: int = 5000, progress=None) -> int:
    """Empty the named models, reset their checkpoints and drain the log into them again.

    With a connection per model and one more in the pool, the models are folded side by
    side, each on its own connection over the same batches: while one waits for PostgreSQL
    another folds. Conversation counts are then left to the full recount that ends the
    rebuild (two transactions refreshing them at once could deadlock). Rows the rebuild has
    not written yet are not looked up (see seen.py): on 1M events about a fifth less time.
    """
    names = list(names)
    with _young_collections_rarer():
        total = await _rebuild(pool, names, limit, progress)
    log.info("rebuilt", projections=names, events=total)
    return total


@contextlib.contextmanager
def _young_collections_rarer(threshold: int = 20_000):
    """A rebuild allocates millions of short-lived objects (rows, facts, states) that die
    batch by batch. At the default threshold (700 allocations) the collector runs thousands
    of times per batch, mostly rescanning the batches in flight: about a fifth of the
    rebuild's Python time. Collect young objects less often while it runs."""
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def _rebuild(pool: asyncpg.Pool, names: list, limit: int, progress) -> int:
    async with pool.acquire() as conn, conn.transaction():
        # its settings hold here too: lost on a crash, the reset is lost with its TRUNCATE
        await conn.fetch(Q["lock_checkpoints"], names)
        for name in names:
            await conn.execute(Q[f"truncate_{name}"])
            await conn.execute(Q["reset_checkpoint"], name)
        head = await conn.fetchval(Q["log_head"])
    seen = {name: SeenIds(head) for name in names}
    groups = [names]
    if len(names) > 1 and pool.get_max_size() > len(names):
        groups = [[n] for n in sorted(names)]
    total = await _drain(pool, groups, limit, progress, counts=False, seen=seen)
    async with pool.acquire() as conn:
        await conn.execute(Q["refresh_all_conversation_counts"])
    return total


async def _drain(
    pool: asyncpg.Pool, groups: list, limit: int, progress, counts: bool, seen=None
) -> int:
    """Fold the log into each group of models (one transaction per batch and group, each
    group on its own connection) over batches read once, ahead, on another connection.

    The batches start where the least advanced checkpoint stands. A batch is used only if a
    group's locked checkpoint is where it starts; if not (another projector took a turn),
    that group folds from its checkpoint alone and leaves, and once the others are done the
    reading starts again from the least advanced checkpoint.
    """
    names = [name for group in groups for name in group]
    total = high = 0  # events counted, and the last position counted
    async with contextlib.AsyncExitStack() as stack:
        reader = await stack.enter_async_context(pool.acquire())
        conns = [await stack.enter_async_context(pool.acquire()) for _ in groups]
        while True:
            start = await reader.fetchval(Q["min_checkpoint"], names)
            if start is None:  # no such projection
                return total
            feed = _Feed(reader, start, high, limit, len(groups), progress)
            results = await asyncio.gather(
                feed.produce(),
                *(
                    _follow(feed, i, conn, group, counts, seen)
                    for i, (conn, group) in enumerate(zip(conns, groups, strict=True))
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            total, high = total + feed.total, feed.high
            if not feed.left:
                return total


class _Feed:
    """Batches of the log read once, in order from `start`, for groups of models that fold
    them at their own pace; reading stays at most `lead` batches ahead of the slowest."""

    def __init__(
        self, reader, start: int, high: int, limit: int, groups: int, progress, lead: int = 2
    ):
        self.limit = limit
        # events of shared batches all groups are past, each position counted once (a
        # reading that starts again after a group left reads some positions twice)
        self.total, self.high = 0, high
        self.left = False  # a group left: its checkpoint was elsewhere
        self._reader = reader
        self._start = start
        self._lead = lead
        self._progress = progress
        self._batches: dict[int, asyncio.Future] = {}  # index -> (start, rows), or None: stop
        self._done = dict.fromkeys(range(groups), 0)  # batches each active group finished
        self._stopped = False
        self._advanced = asyncio.Event()

    def _future(self, index: int) -> asyncio.Future:
        if index not in self._batches:
            self._batches[index] = asyncio.get_running_loop().create_future()
        return self._batches[index]

    def _slowest(self) -> int:
        return min(self._done.values())

    async def produce(self) -> None:
        start, index = self._start, 0
        while not self._stopped:
            while index - self._slowest() >= self._lead and not self._stopped:
                self._advanced.clear()
                await self._advanced.wait()
            if self._stopped:
                return
            future = self._future(index)
            try:
                rows = await fetch_input(self._reader, start, self.limit)
            except BaseException:
                self.stop()  # the groups end; the error comes out of the gather
                raise
            if not future.done():
                future.set_result((start, rows))
            if len(rows) < self.limit:
                return
            start, index = rows[-1]["position"], index + 1

    async def batch(self, index: int):
        """(start, rows) of batch `index`, or None once the feed stopped."""
        if self._stopped:
            return None
        return await self._future(index)

    def finished(self, group: int, index: int) -> None:
        self._moved(group, index + 1)

    def leave(self, group: int, again: bool) -> None:
        """A group follows the feed no more; `again`: it has more to fold after the others
        are done."""
        self.left = self.left or again
        self._moved(group, None)

    def _moved(self, group: int, done: int | None) -> None:
        before = self._slowest()
        if done is None:
            del self._done[group]
            if not self._done:
                self.stop()
                return
        else:
            self._done[group] = done
        for i in range(before, self._slowest()):  # every active group is past these
            self._count(self._batches.pop(i).result()[1])
        self._advanced.set()

    def _count(self, rows: list) -> None:
        if not rows or rows[-1]["position"] <= self.high:
            return
        new = len(rows)
        if rows[0]["position"] <= self.high:
            new = sum(1 for r in rows if r["position"] > self.high)
        self.total, self.high = self.total + new, rows[-1]["position"]
        if self._progress is not None:
            self._progress(new)

    def stop(self) -> None:
        self._stopped = True
        for future in self._batches.values():
            if not future.done():
                future.set_result(None)
        self._advanced.set()


async def _follow(feed: _Feed, group: int, conn, names: list, counts: bool, seen=None) -> None:
    """Fold the feed's batches into a group of models, in order, until a short batch; if the
    group's checkpoint is elsewhere, fold from there once and leave the feed."""
    index = 0
    try:
        while (item := await feed.batch(index)) is not None:
            start, rows = item
            asked = []

            async def rows_after(position: int, start=start, rows=rows, asked=asked) -> list:
                asked.append(position)
                return rows if position == start else await fetch_input(conn, position, feed.limit)

            await project_batch(conn, names, feed.limit, rows_after, counts=counts, seen=seen)
            if asked != [start]:
                # another projector moved a checkpoint (asked elsewhere), or the group has
                # no checkpoint at all (asked nothing): this batch was not for it
                feed.leave(group, again=bool(asked))
                return
            feed.finished(group, index)
            if len(rows) < feed.limit:
                return
            index += 1
    except BaseException:
        feed.stop()
        raise


async def leader_pid(pool: asyncpg.Pool) -> int | None:
    """The OS pid of the process whose projector leads on this database, if any."""
    name = await pool.fetchval(Q["projector_leader"], _LEADER_LOCK)
    if name and name.startswith(LEADER_APPLICATION + ":"):
        return int(name.rsplit(":", 1)[1])
    return None


async def status(pool: asyncpg.Pool) -> list[dict]:
    """Position, head and lag of every projection."""
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(Q["projection_status"])]


class Projector:
    """The background projector of a service process (leader-elected, NOTIFY-driven)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 1000,
        min_interval: float = PROJECTOR_INTERVAL,
    ):
        self._pool = pool
        self._dsn = dsn
        self._poll = poll_interval
        # under load, a batch at most every min_interval (KAPSO_SINK_PROJECTOR_INTERVAL): what
        # arrived meanwhile is folded together, for far less CPU per event than chasing the
        # head (0.5 s instead of 0.05 s: ~20% less projector CPU under full ingest), while
        # read models stay within about that interval of the log. After a quiet spell the
        # first event is folded at once.
        self.min_interval = min_interval
        self._batch = batch_size
        self.is_leader = False
        self.errors = 0
        self.batches = 0  # folded while leading, and the events in them
        self.events = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Lead when the lock is free, stand by otherwise, until `stop` is set."""
        while not stop.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    server_settings={"application_name": f"{LEADER_APPLICATION}:{os.getpid()}"},
                )
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
                    await self._lead(conn, stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.errors += 1
                log.warning("projector_error", error=type(exc).__name__, detail=str(exc)[:200])
            finally:
                self.is_leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await _wait(stop, None, self._poll)

    async def _lead(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        self.is_leader = True
        log.info("projector_leading")
        wake = asyncio.Event()
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
        clock = asyncio.get_running_loop().time
        folded_at = -math.inf  # when the last catch-up that found events began
        while not stop.is_set():
            wake.clear()
            started = clock()
            if await catch_up(self._pool, limit=self._batch, progress=self._folded):
                folded_at = started
            if conn.is_closed():
                return
            await _wait(stop, wake, self._poll)
            rest = self.min_interval - (clock() - folded_at)
            if rest > 0 and not stop.is_set():
                await _wait(stop, None, rest)

    def _folded(self, events: int) -> None:
        self.batches += 1
        self.events += events


async def _wait(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Return when `stop` or `wake` is set, or after `seconds`."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
