"""Which read-model rows a rebuild has written so far, so it need not look up rows that
cannot exist yet.

A rebuild starts from empty tables, so a row exists only if an earlier batch of the same
rebuild wrote it. Looking every batch's ids up anyway is a random index probe per id: on a
log of 1M events, close to half of the messages model's query time. The ids are kept in a
Bloom filter: an id written is always kept for lookup, an id never written almost never is
(a false positive costs one lookup that finds nothing), and memory stays small and bounded.

The filter only knows this rebuild's writes. Another projector may take a turn meanwhile
(see runner.py); the filter then tells by the checkpoint, which is no longer where it left
it, and stops being used for the rest of the rebuild.
"""

from __future__ import annotations

_BITS_PER_ID = 16  # with two probes, about 1.4% false positives when every event is a new id
_MIN_BITS = 1 << 16
_MAX_BITS = 1 << 28  # 32 MiB; beyond ~17M ids false positives rise, lookups come back
_USEFUL = 0.5  # when more ids than this share were written before, the filter saves little


class SeenIds:
    def __init__(self, capacity: int):
        self._bits = min(_MAX_BITS, max(_MIN_BITS, capacity * _BITS_PER_ID))
        self._array = bytearray(self._bits // 8 + 1)
        self.position = 0  # the checkpoint up to which every write of the model is known
        self.valid = True
        self._asked = self._kept = 0

    def to_look_up(self, keys: list[str]) -> list[str]:
        """The keys this rebuild may have written (all it did write, a few it did not).

        When most keys so far were written before (conversations recur all through a log),
        the filter spares few lookups for its own cost: it retires for the rest of the
        rebuild."""
        array, probes, maybe = self._array, self._probes, []
        for key in keys:
            a, b = probes(key)
            if array[a >> 3] & (1 << (a & 7)) and array[b >> 3] & (1 << (b & 7)):
                maybe.append(key)
        self._asked += len(keys)
        self._kept += len(maybe)
        if self._asked >= 10_000 and self._kept > _USEFUL * self._asked:
            self.valid = False
        return maybe

    def add(self, keys) -> None:
        array, probes = self._array, self._probes
        for key in keys:
            a, b = probes(key)
            array[a >> 3] |= 1 << (a & 7)
            array[b >> 3] |= 1 << (b & 7)

    def _probes(self, key: str) -> tuple[int, int]:
        """The two bit positions of a key: the halves of its 64-bit hash."""
        h = hash(key) & 0xFFFF_FFFF_FFFF_FFFF
        return (h & 0xFFFF_FFFF) % self._bits, (h >> 32) % self._bits

    def follows(self, checkpoint: int) -> bool:
        """Whether the filter still knows every row: the model's locked checkpoint is where
        this rebuild's last batch left it. Once it is not, it never is again."""
        if self.valid and checkpoint != self.position:
            self.valid = False
        return self.valid
