"""Group commit: concurrent requests share one transaction and one set-based INSERT.

Commit order and position order. Positions come from an identity column, and a reader
(the projector) follows the log with `position > checkpoint`. If two transactions could
append at once, the one holding the lower positions might commit after a reader had
already passed them, and those events would be skipped forever. We rule that out with one
transaction-scoped advisory lock that every append takes first (the whole append is one
call of the SQL function in migration 0007): positions are drawn only while it is held, and
it is released only after commit, so commit order equals position order on the whole
database, whatever the number of writers and processes.

A writer keeps a few append transactions in flight (`concurrency`): while one holds the
lock and commits, the next batch is already encoded, sent and waiting for the lock, so the
lock is never idle for a round trip or for the event loop. Each committed batch sends one
NOTIFY, delivered to listeners when the transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg
import structlog

from service.db import Q
from service.log.records import DeliveryRecord, EventRecord
from service.log.spool import RawDelivery, SpoolError

log = structlog.get_logger("service.log.writer")

NOTIFY_CHANNEL = "kapso_sink_events"


class StoreUnavailable(Exception):
    """The log could not commit in time; the caller should answer 503."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    stored: int
    duplicates: int
    positions: tuple[int, ...]
    spooled: bool = False


@dataclass(slots=True)
class _Pending:
    delivery: DeliveryRecord
    events: list[EventRecord]
    future: asyncio.Future = field(repr=False)
    raw: RawDelivery | None = None


@dataclass
class WriterStats:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    failures: int = 0
    spooled: int = 0
    drained: int = 0
    stored_by_event: dict[str, int] = field(default_factory=dict)
    duplicates_by_event: dict[str, int] = field(default_factory=dict)


class LogWriter:
    """The one appender of a process; `append()` returns once the rows are committed.

    Up to `concurrency` batches are in flight at once (each on its own pool connection).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_max: int = 1000,
        commit_timeout: float = 5.0,
        spool=None,
        reparse=None,
        retry_every: float = 1.0,
        concurrency: int = 4,
    ):
        self._pool = pool
        self.spool = spool
        self._reparse = reparse  # RawDelivery -> (DeliveryRecord, events), for draining
        self._retry_every = retry_every
        self._batch_max = batch_max
        self._timeout = commit_timeout
        self._concurrency = max(1, concurrency)
        self._spool_lock = asyncio.Lock()
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self.stats = WriterStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-writer")

    async def close(self) -> None:
        """Commit everything queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def append(
        self, delivery: DeliveryRecord, events: list[EventRecord], raw: RawDelivery | None = None
    ) -> AppendResult:
        """Queue one delivery's events and wait until they are committed (or, with a spool
        and the database unreachable, fsynced to the spool)."""
        if self._closing:
            raise StoreUnavailable("shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_Pending(delivery, events, future, raw))
        self._wake.set()
        # one timer instead of wait_for + shield (much cheaper); a late commit still lands
        timer = loop.call_later(self._timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def _run(self) -> None:
        inflight: set[asyncio.Task] = set()

        def finished(task: asyncio.Task) -> None:
            inflight.discard(task)
            self._wake.set()  # a slot is free: start the next batch

        while True:
            if self.spool is not None and self.spool.pending:
                await _settle(inflight)  # draining keeps arrival order: nothing else in flight
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._retry_every)
                await self._drain_spool()
            else:
                await self._wake.wait()
            self._wake.clear()
            while self._queue and len(inflight) < self._concurrency:
                batch = self._queue[: self._batch_max]
                del self._queue[: self._batch_max]
                task = asyncio.create_task(self._commit_logged(batch))
                inflight.add(task)
                task.add_done_callback(finished)
            if self._closing and not self._queue:
                await _settle(inflight)
                if not self._queue:
                    return

    async def _commit_logged(self, batch: list[_Pending]) -> None:
        try:
            await self._commit(batch)
        except Exception:  # noqa: BLE001 - the writer must outlive any one batch
            log.exception("writer_batch_failed", deliveries=len(batch))
            self._fail(batch, "the event log is unavailable")

    async def _commit(self, batch: list[_Pending]) -> None:
        if self.spool is not None and self.spool.pending:
            # keep arrival order: nothing bypasses older deliveries still in the spool
            await self._to_spool(batch, "spool not yet drained")
            return
        try:
            results = await self._write_robust(batch)
        except Exception as exc:  # noqa: BLE001 - spooled, or every waiting request gets 503
            self.stats.failures += 1
            log.warning(
                "append_failed",
                error=type(exc).__name__,
                detail=str(exc)[:200],
                deliveries=len(batch),
            )
            if self.spool is not None and all(p.raw is not None for p in batch):
                await self._to_spool(batch, type(exc).__name__)
                return
            self._fail(batch, "the event log is unavailable")
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    def _fail(self, batch: list[_Pending], reason: str) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(StoreUnavailable(reason))

    async def _to_spool(self, batch: list[_Pending], why: str) -> None:
        """fsync the batch's raw deliveries to the spool, then answer them."""
        try:
            records = [p.raw.encode() for p in batch]
            async with self._spool_lock:  # batches in flight may fail together
                await asyncio.to_thread(self.spool.append, records)
        except (SpoolError, TypeError, ValueError) as exc:
            log.error("spool_refused", reason=str(exc), deliveries=len(batch))
            self._fail(batch, f"the event log is unavailable and {exc}")
            return
        self.stats.spooled += len(batch)
        log.warning("spooled", deliveries=len(batch), why=why, records=self.spool.records)
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(AppendResult(len(pending.events), 0, (), spooled=True))

    async def _drain_spool(self) -> bool:
        """Commit every spooled delivery in arrival order, then empty the spool.

        A chunk that fails leaves the spool as it is; the next attempt starts again from the
        first record and the idempotency hash turns what already landed into duplicates.
        """
        records = await asyncio.to_thread(lambda: list(self.spool.read()))
        chunk: list[_Pending] = []
        try:
            for payload in records:
                try:
                    raw = RawDelivery.decode(payload)
                except (ValueError, KeyError, TypeError) as exc:  # checksum ok, content not
                    log.error("spool_record_unreadable", error=type(exc).__name__)
                    continue
                delivery, events = self._reparse(raw)
                chunk.append(_Pending(delivery, events, None))
                if len(chunk) >= self._batch_max:
                    await self._write_robust(chunk)
                    chunk = []
            if chunk:
                await self._write_robust(chunk)
        except Exception as exc:  # noqa: BLE001 - try again later
            log.info("spool_drain_waiting", error=type(exc).__name__, records=len(records))
            return False
        await asyncio.to_thread(self.spool.truncate)
        self.stats.drained += len(records)
        log.warning("spool_drained", records=len(records))
        return True

    async def _write_robust(self, batch: list[_Pending]) -> list[AppendResult]:
        """Write a batch; if PostgreSQL refuses a value, write each delivery alone and drop
        the payloads of the one it refuses (its raw body is kept in `deliveries`)."""
        try:
            return await asyncio.wait_for(self._write(batch), self._timeout)
        except asyncpg.DataError:
            pass
        results = []
        for pending in batch:
            try:
                results += await asyncio.wait_for(self._write([pending]), self._timeout)
            except asyncpg.DataError as exc:
                log.warning("payload_rejected", error=str(exc)[:200])
                reason = f"payload rejected by PostgreSQL ({type(exc).__name__}); raw body kept"
                pending.events = [e.without_payload(reason) for e in pending.events]
                results += await asyncio.wait_for(self._write([pending]), self._timeout)
        return results

    async def _write(self, batch: list[_Pending]) -> list[AppendResult]:
        deliveries = {p.delivery.body_sha256: p.delivery for p in batch}
        events = [e for p in batch for e in p.events]
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(Q["append_batch"], list(deliveries.values()), events)
        inserted = dict(rows)  # (idem_hash, position) pairs
        return self._tally(batch, inserted)

    def _tally(self, batch: list[_Pending], inserted: dict[bytes, int]) -> list[AppendResult]:
        stats = self.stats
        stats.batches += 1
        results = []
        for pending in batch:
            stored, dupes, positions = 0, 0, []
            for event in pending.events:
                position = inserted.pop(event.idem_hash, None)
                counter = stats.stored_by_event if position else stats.duplicates_by_event
                counter[event.event_name] = counter.get(event.event_name, 0) + 1
                if position is None:
                    dupes += 1
                else:
                    stored += 1
                    positions.append(position)
            stats.stored += stored
            stats.duplicates += dupes
            results.append(AppendResult(stored, dupes, tuple(positions)))
        return results


async def _settle(tasks: set[asyncio.Task]) -> None:
    if tasks:
        await asyncio.wait(set(tasks))


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(StoreUnavailable("the event log did not commit in time"))
