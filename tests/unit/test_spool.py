from datetime import UTC, datetime

import pytest

from service.log.spool import RawDelivery, Spool, SpoolError, frame


def raw(i: int) -> RawDelivery:
    return RawDelivery(
        "kapso",
        datetime(2026, 1, 1, tzinfo=UTC),
        "abcd1234",
        (("X-Webhook-Event", "e"), ("X-Idempotency-Key", str(i))),
        f'{{"n":{i},"t":"¿qué? 👋"}}'.encode() + b"\xff",
    )


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool.log", 1 << 20)
    s.open()
    yield s
    s.close()


def test_records_round_trip_in_order(spool):
    spool.append([raw(1).encode(), raw(2).encode()])
    spool.append([raw(3).encode()])
    assert [RawDelivery.decode(r) for r in spool.read()] == [raw(1), raw(2), raw(3)]
    assert spool.records == 3 and spool.pending
    spool.truncate()
    assert not spool.pending and list(spool.read()) == []


def test_torn_last_record_is_skipped(spool, tmp_path):
    spool.append([raw(1).encode(), raw(2).encode()])
    with open(spool.path, "ab") as fh:  # a crash in the middle of writing record 3
        fh.write(frame(raw(3).encode())[:-7])
    assert [RawDelivery.decode(r) for r in spool.read()] == [raw(1), raw(2)]


def test_corrupt_record_in_the_middle_is_skipped_and_reading_resumes(spool):
    spool.append([raw(1).encode(), raw(2).encode(), raw(3).encode()])
    data = bytearray(spool.path.read_bytes())
    second = data.find(b"KSP1", 4)
    data[second + 20] ^= 0xFF
    spool.path.write_bytes(bytes(data))
    assert [RawDelivery.decode(r) for r in spool.read()] == [raw(1), raw(3)]


def test_full_spool_refuses(tmp_path):
    small = Spool(tmp_path / "s.log", len(frame(raw(1).encode())) + 10)
    small.open()
    small.append([raw(1).encode()])
    with pytest.raises(SpoolError, match="full"):
        small.append([raw(2).encode()] * 3)
    assert len(list(small.read())) == 1
    small.close()


def test_one_owner_per_spool_file(spool):
    other = Spool(spool.path, 1 << 20)
    with pytest.raises(SpoolError, match="another process"):
        other.open()


def test_unwritable_spool_refuses_every_append(tmp_path):
    (tmp_path / "taken").mkdir()  # the spool path is a folder: it cannot be opened as a file
    broken = Spool(tmp_path / "taken", 1 << 20)
    broken.open()
    with pytest.raises(SpoolError, match="not writable"):
        broken.append([raw(1).encode()])
    assert not broken.pending


def test_write_failure_is_a_spool_error(spool):
    spool.close()  # a closed descriptor: the write itself fails
    with pytest.raises(SpoolError):
        spool.append([raw(1).encode()])
