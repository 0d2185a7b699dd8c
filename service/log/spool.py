"""The outage spool: verified deliveries kept on local disk while PostgreSQL is unreachable.

One record per delivery, appended and fsynced before the sink answers 200. A record is a
fixed header (magic, length, CRC-32) followed by the delivery as JSON: the raw body, the
request headers, which secret verified it and when it arrived, so draining re-parses it exactly
as the live path would. A crash can leave a torn last record; reading detects it (short read or
bad checksum), logs it and skips it, and every complete record still drains.
"""

from __future__ import annotations

import base64
import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import structlog

log = structlog.get_logger("service.log.spool")

MAGIC = b"KSP1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, crc32 of the payload


class SpoolError(Exception):
    """The spool cannot take this delivery (full or unwritable): answer 503."""


@dataclass(frozen=True, slots=True)
class RawDelivery:
    """A verified delivery as received: enough to parse it again, byte for byte."""

    kind: str
    received_at: datetime
    secret_id: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "kind": self.kind,
                "received_at": self.received_at.isoformat(),
                "secret_id": self.secret_id,
                "headers": self.headers,
                "body": base64.b64encode(self.body).decode(),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> RawDelivery:
        doc = orjson.loads(data)
        return cls(
            doc["kind"],
            datetime.fromisoformat(doc["received_at"]),
            doc["secret_id"],
            tuple((k, v) for k, v in doc["headers"]),
            base64.b64decode(doc["body"]),
        )


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class Spool:
    """An append-only file of framed records, owned by one process (flock)."""

    def __init__(self, path: Path, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._broken: str | None = None
        self._size = 0  # the file is ours alone (flock): no stat per request to know it
        self.records = 0

    def open(self) -> None:
        """Open (and lock) the spool file; if that fails, every append will say why."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            self._broken = f"spool is not writable: {exc.strerror or exc}"
            log.error("spool_unavailable", path=str(self.path), reason=self._broken)
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise SpoolError(f"{self.path} is used by another process") from None
        self._size = os.fstat(self._fd).st_size
        self.records = sum(1 for _ in self.read())
        if self.records:
            log.warning("spool_found", path=str(self.path), records=self.records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def size(self) -> int:
        return self._size if self._fd is not None else 0

    @property
    def pending(self) -> bool:
        return self._fd is not None and self.size > 0

    def append(self, payloads: list[bytes]) -> None:
        """Append records and fsync; raise SpoolError if full or not writable."""
        data = b"".join(frame(p) for p in payloads)
        if self._fd is None:
            raise SpoolError(self._broken or "spool is not open")
        if self.size + len(data) > self.max_bytes:
            raise SpoolError("spool is full")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            self._size = os.fstat(self._fd).st_size  # a failed write may have left a part
            raise SpoolError(f"spool is not writable: {exc.strerror or exc}") from None
        self._size += len(data)
        self.records += len(payloads)

    def read(self) -> Iterator[bytes]:
        """Every complete record in order; torn or corrupt stretches are logged and skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        offset = 0
        while offset < len(data):
            magic, length, crc = (
                _HEADER.unpack_from(data, offset)
                if len(data) - offset >= _HEADER.size
                else (None, 0, 0)
            )
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if magic == MAGIC and len(payload) == length and zlib.crc32(payload) == crc:
                yield payload
                offset = start + length
                continue
            resume = data.find(MAGIC, offset + 1)
            log.warning(
                "spool_record_skipped",
                offset=offset,
                reason="torn last record" if resume < 0 else "corrupt record",
                bytes=(len(data) if resume < 0 else resume) - offset,
            )
            if resume < 0:
                return
            offset = resume

    def truncate(self) -> None:
        """Empty the spool once everything in it is committed to the log."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        self._size = 0
        self.records = 0
