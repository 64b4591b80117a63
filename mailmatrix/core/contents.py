"""Attachment contents: which files of one size hold the same bytes for different recipients.

Intake's shared-file rule compares files; a copy of one person's letter saved under another
person's name is another file with the same bytes, and so is a copy of it made a set's
default_attachment, which goes to many. Only files of one size can be copies, so intake asks
here only about the files of a size that rows of two recipients name, or a row and a default.
A file is read whole at most once: where storage has a checksum of every file of the group in
one algorithm (S3's full-object checksums; a folder's prints of three samples of each file),
those are compared first and only files whose checksum another recipient's file has are read
whole and hashed; otherwise every file of the group is.

The ledger keeps, with each letter that carried its recipient's own file, the file's size,
SHA-256 and sample print (sample_print: what a folder's checksum is), so validation of any
later campaign can tell a copy of it, or the file renamed (mailmatrix.core.earlier.SentFiles).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import zlib
from array import array
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from mailmatrix.core.seen import SeenTable
from mailmatrix.errors import NotFoundError, ObjectChanged
from mailmatrix.ports import Storage

_CHUNK = 1024 * 1024
SAMPLE_BYTES = 4096  # each of a print's three samples (sample_print)
_SLICE = 256  # files handed to the readers at a time: the queue stays short in any group
_KEY_BITS = 0x7FFF_FFFF_FFFF_FFFF

T = TypeVar("T")


class Contents(Protocol):
    """Reads attachment files to tell whether two hold the same bytes, each in the version the
    listing tagged (ObjectChanged when it is no longer that one); ``readers`` at once."""

    readers: int

    def checksum(self, name: str, tag: str) -> str | None:
        """The checksum of the whole file storage keeps ("ALGORITHM value"), or None."""
        ...

    def digest(self, name: str, tag: str) -> bytes:
        """A hash of the file's bytes, read as a stream."""
        ...

    def fingerprint(self, name: str, tag: str) -> tuple[str, str | None]:
        """The file's sample_print, and its hex SHA-256 when that was had on the way (the
        file read whole), else None."""
        ...

    def sha256(self, name: str, tag: str) -> str:
        """The hex SHA-256 of the file's bytes, read as a stream."""
        ...

    def start(self, name: str, tag: str, count: int) -> bytes | None:
        """The file's first ``count`` bytes where storage reads them at little cost, else
        None (Storage.first_bytes)."""
        ...


class StoredContents:
    """The Contents of the files under ``prefix`` (the attachments location) of a storage."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self._storage = storage
        self._prefix = prefix
        self.readers = storage.concurrent_reads

    def checksum(self, name: str, tag: str) -> str | None:
        """The storage's checksum of the file (S3's full-object checksum; a folder has none)."""
        key = self._prefix + name
        try:
            return self._storage.checksum(key, tag=tag or None)
        except (ObjectChanged, NotFoundError) as error:
            raise _changed_while_compared(key) from error

    def digest(self, name: str, tag: str) -> bytes:
        """The BLAKE2b hash of the file's bytes, read a chunk at a time from the version
        ``tag`` names (a local file's tag is checked on the file opened)."""
        digest = hashlib.blake2b(digest_size=32)
        self._read_into(name, tag, digest.update)
        return digest.digest()

    def fingerprint(self, name: str, tag: str) -> tuple[str, str | None]:
        """The file's sample_print: a folder's checksum is that print (a few small reads);
        other storage's file is read whole once, and its SHA-256 comes with it."""
        checksum = self.checksum(name, tag)
        if checksum is not None and checksum.startswith(SAMPLE_CHECKSUM):
            return checksum[len(SAMPLE_CHECKSUM) :], None
        key = self._prefix + name
        try:
            data = self._storage.get(key, tag=tag or None)
        except (ObjectChanged, NotFoundError) as error:
            raise _changed_while_compared(key) from error
        return sample_print(data), hashlib.sha256(data).hexdigest()

    def sha256(self, name: str, tag: str) -> str:
        """The hex SHA-256 of the file's bytes, read a chunk at a time (see digest)."""
        digest = hashlib.sha256()
        self._read_into(name, tag, digest.update)
        return digest.hexdigest()

    def start(self, name: str, tag: str, count: int) -> bytes | None:
        """The file's first ``count`` bytes, where storage reads them at little cost (a
        folder), else None (S3)."""
        key = self._prefix + name
        try:
            return self._storage.first_bytes(key, count, tag=tag or None)
        except (ObjectChanged, NotFoundError) as error:
            raise _changed_while_read(key, "read its start") from error

    def _read_into(self, name: str, tag: str, update: Callable[[bytes], object]) -> None:
        """Pass the file's bytes to ``update`` a chunk at a time."""
        key = self._prefix + name
        try:
            with self._storage.open(key, tag=tag or None) as stream:
                while chunk := stream.read(_CHUNK):
                    update(chunk)
        except (ObjectChanged, NotFoundError) as error:
            raise _changed_while_compared(key) from error


# A folder's checksum of a file (LocalStorage.checksum): this, then the file's sample_print.
SAMPLE_CHECKSUM = "SAMPLE "


def sample_print(data: bytes | memoryview) -> str:
    """The CRC-32 of three samples of SAMPLE_BYTES of ``data`` (start, middle, end; all of it
    when it is smaller), in hex: files whose prints differ differ; equal prints only make
    two files candidates, whose bytes decide."""
    return print_of_samples(lambda offset, length: data[offset : offset + length], len(data))


def print_of_samples(read: Callable[[int, int], bytes | memoryview], size: int) -> str:
    """sample_print of a file of ``size`` bytes whose samples ``read(offset, length)`` gives
    (a folder reads only them from the file: the ledger keeps the print of a letter's bytes,
    and the two must agree)."""
    if size <= 3 * SAMPLE_BYTES:
        spans = [(0, size)]
    else:
        spans = [(0, SAMPLE_BYTES), ((size - SAMPLE_BYTES) // 2, SAMPLE_BYTES)]
        spans.append((size - SAMPLE_BYTES, SAMPLE_BYTES))
    crc = 0
    for offset, length in spans:
        crc = zlib.crc32(read(offset, length), crc)
    return f"{crc:08x}"


def _changed_while_compared(key: str) -> ObjectChanged:
    """Why validation stops when a file it compares is no longer the one it listed."""
    return _changed_while_read(key, "compared it with the other attachments of its size")


def _changed_while_read(key: str, doing: str) -> ObjectChanged:
    """Why validation stops when a file is no longer the one it listed as it ``doing``."""
    return ObjectChanged(
        f"{key} changed or went away while validation {doing}: nothing was sent; run the"
        " file again once the attachments are in place"
    )


def copies(
    names: Sequence[str],
    tags: Sequence[str],
    recipients: Sequence[int],
    many: Sequence[int],
    contents: Contents,
) -> list[tuple[int, int]]:
    """For one group of files of one size, named ``names`` (listed in versions ``tags``), each
    its recipient's (a hash, ``recipients``) or, where ``many`` is set, named for several:
    return (file, another file with its bytes and another recipient) for each file that has
    one, by their numbers in the group, in order.
    """
    everyone = range(len(names))
    prints = array("q")
    algorithms = set()
    # Storage that keeps no checksum (a folder) says so at the first file.
    first = contents.checksum(names[0], tags[0])
    rest = _read(contents.checksum, names, tags, everyone[1:], contents.readers)
    with contextlib.closing(rest) as checksums:
        for checksum in itertools.chain([first], checksums):
            if checksum is None:
                break
            algorithms.add(checksum.partition(" ")[0])
            prints.append(_key(hash(checksum)))
    if len(prints) < len(names) or len(algorithms) > 1:
        files: Sequence[int] = everyone  # checksums that cannot be compared: read every file
    else:
        # Equal checksums of one algorithm are a file's copies or (a CRC) a chance match:
        # the bytes of those files alone decide.
        pairs = _clashes(prints, everyone, recipients, many)
        files = sorted({number for pair in pairs for number in pair})
    digests = _read(contents.digest, names, tags, files, contents.readers)
    prints = array("q", (_key(int.from_bytes(digest[:8], "big")) for digest in digests))
    return _clashes(prints, files, recipients, many)


def _read(
    read: Callable[[str, str], T],
    names: Sequence[str],
    tags: Sequence[str],
    files: Iterable[int],
    readers: int,
) -> Generator[T, None, None]:
    """``read(name, tag)`` of each of ``files``, in order, ``readers`` at a time."""
    if readers <= 1:
        yield from (read(names[n], tags[n]) for n in files)
        return
    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="contents") as pool:
        numbers = iter(files)
        while chunk := list(itertools.islice(numbers, _SLICE)):
            yield from pool.map(read, [names[n] for n in chunk], [tags[n] for n in chunk])


def _clashes(
    prints: Sequence[int],
    files: Sequence[int],
    recipients: Sequence[int],
    many: Sequence[int],
) -> list[tuple[int, int]]:
    """(file, another file of the same print and another recipient) for each such file of
    ``files`` (``prints``: theirs, in the same order)."""

    def apart(one: int, other: int) -> bool:
        return bool(recipients[one] != recipients[other] or many[one] or many[other])

    table = SeenTable()
    contested: dict[int, tuple[int, int]] = {}  # print -> its first file, one apart from it
    for number, file in enumerate(files):
        seen = table.add(prints[number], file, 0)
        if seen is not None and prints[number] not in contested and apart(file, seen[0]):
            contested[prints[number]] = (seen[0], file)
    if not contested:
        return []
    found = []
    for number, file in enumerate(files):
        pair = contested.get(prints[number])
        if pair is not None:
            first, other = pair
            found.append((file, other if file == first or not apart(file, first) else first))
    return found


def _key(value: int) -> int:
    """A print as SeenTable keeps its keys (63 bits, never 0): equal prints, equal keys."""
    return (value & _KEY_BITS) or 1
