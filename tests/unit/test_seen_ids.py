"""The rebuild's filter of rows it has written: never loses one, rarely claims a stranger."""

from __future__ import annotations

from service.projections.seen import SeenIds


def test_every_written_id_is_looked_up_and_few_others_are():
    seen = SeenIds(capacity=20_000)
    written = [f"wamid.W{n}" for n in range(10_000)]
    for start in range(0, len(written), 500):
        seen.add(written[start : start + 500])
    assert seen.to_look_up(written) == written  # no false negative, order kept
    fresh = SeenIds(capacity=20_000)
    fresh.add(written)
    strangers = [f"wamid.S{n}" for n in range(10_000)]
    assert len(fresh.to_look_up(strangers)) < 300  # about 1% at this fill, 3% allowed
    assert fresh.valid


def test_it_retires_when_most_ids_recur_and_when_the_checkpoint_moved_elsewhere():
    recurring = SeenIds(capacity=1_000)
    ids = [f"conv-{n}" for n in range(200)]
    recurring.add(ids)
    for _ in range(60):  # 12,000 keys asked, nearly all written before
        assert recurring.to_look_up(ids) == ids
    assert not recurring.valid

    moved = SeenIds(capacity=1_000)
    assert moved.follows(0)
    moved.position = 40
    assert moved.follows(40)
    assert not moved.follows(55)  # another projector folded 40..55
    assert not moved.follows(40)  # and it stays retired
