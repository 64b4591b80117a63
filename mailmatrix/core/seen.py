"""A flat table of 64-bit keys, for what validation must remember of every row or file.

Its entries sit in flat arrays: a dict of as many Python ints takes several times the memory.
"""

from __future__ import annotations

from array import array


class SeenTable:
    """Open-addressing hash table of 64-bit keys -> (first row, flag, content).

    The entries sit in the order they came in three arrays that grow in place (key, row and
    flag, content: 24 bytes); the table holds 32-bit entry numbers, at most half of its slots
    used, and only it is built anew as it doubles. A million keys peak at 33 MB (whole 24-byte
    slots, the old table beside the new one as it doubled, took 97 MB), far below a dict of
    Python ints. The content (a 64-bit hash) tells whether a key comes back with the same content
    (the same recipient, the same row); fewer bits let two recipients pass for one about once
    in 16 million pairs.
    """

    def __init__(self) -> None:
        self._mask = 1023
        self._slots = zeros(self._mask + 1)  # entry number + 1; 0: free
        self._keys, self._rows, self._contents = array("q"), array("q"), array("q")

    def __len__(self) -> int:
        return len(self._keys)

    def add(
        self, key: int, row: int, content: int, *, flag: bool = False
    ) -> tuple[int, bool, bool] | None:
        """Insert key; return None if new, else (its row, whether the content is the same,
        its ``flag``)."""
        key = (key & 0x7FFF_FFFF_FFFF_FFFF) or 1
        slot, entry = self._find(key)
        if entry:
            packed = self._rows[entry - 1]
            return packed >> 1, self._contents[entry - 1] == content, bool(packed & 1)
        self._keys.append(key)
        self._rows.append(row << 1 | flag)
        self._contents.append(content)
        self._slots[slot] = len(self._keys)
        if len(self._keys) * 2 > self._mask:
            self._grow()
        return None

    def put(self, key: int, row: int, content: int, *, flag: bool = False) -> None:
        """Set key's row, content and flag, whether it was added or not."""
        entry = self._find((key & 0x7FFF_FFFF_FFFF_FFFF) or 1)[1]
        if not entry:
            self.add(key, row, content, flag=flag)
            return
        self._rows[entry - 1] = row << 1 | flag
        self._contents[entry - 1] = content

    def get(self, key: int) -> tuple[int, int, bool] | None:
        """The row, content and flag of ``key``, or None if it was not added."""
        entry = self._find((key & 0x7FFF_FFFF_FFFF_FFFF) or 1)[1]
        if not entry:
            return None
        packed = self._rows[entry - 1]
        return packed >> 1, self._contents[entry - 1], bool(packed & 1)

    def holds(self, key: int) -> bool:
        """Whether ``key`` was added."""
        return bool(self._find((key & 0x7FFF_FFFF_FFFF_FFFF) or 1)[1])

    def _find(self, key: int) -> tuple[int, int]:
        """The slot of ``key`` and its entry number + 1, or the free slot where it would go
        and 0."""
        slots, keys, mask = self._slots, self._keys, self._mask
        slot = key & mask
        entry = slots[slot]
        while entry and keys[entry - 1] != key:
            slot = (slot + 1) & mask
            entry = slots[slot]
        return slot, entry

    def _grow(self) -> None:
        """Double the table and enter every key again (the entries stay where they are)."""
        self._mask = mask = self._mask * 2 + 1
        self._slots = slots = zeros(mask + 1)
        for entry, key in enumerate(self._keys, 1):
            slot = key & mask
            while slots[slot]:
                slot = (slot + 1) & mask
            slots[slot] = entry


def size_key(size: int) -> int:
    """A file size as a table key spread over 63 bits, one key a size (sizes run close
    together, and the table picks slots by the low bits)."""
    return size * 0x9E37_79B9_7F4A_7C15 & 0x7FFF_FFFF_FFFF_FFFF


def zeros(size: int) -> array:
    """``size`` unsigned 32-bit zeros, made without a temporary of their size."""
    return array("I", [0]) * size
