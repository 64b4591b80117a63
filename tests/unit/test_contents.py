"""Attachment contents: copies among the files of one size, checksums first where kept."""

from __future__ import annotations

import collections
import hashlib
import os
import zlib

import pytest

from mailmatrix.adapters.storage_local import LocalStorage
from mailmatrix.core.contents import StoredContents, copies
from mailmatrix.errors import ObjectChanged

ALICE, BOB, CAROL = 101, 202, 303  # recipients, as intake hashes them


class Files:
    """Contents of named files, with the checksums storage keeps of some; counts reads."""

    readers = 1

    def __init__(self, files: dict[str, bytes], checksums: dict[str, str]) -> None:
        self.files = files
        self.checksums = checksums
        self.read: collections.Counter[str] = collections.Counter()

    def checksum(self, name: str, tag: str) -> str | None:
        return self.checksums.get(name)

    def digest(self, name: str, tag: str) -> bytes:
        self.read[name] += 1
        return hashlib.blake2b(self.files[name]).digest()


def compare(files: Files, owners: list[int], many: bytes | None = None) -> list[tuple[int, int]]:
    names = list(files.files)
    return copies(names, [""] * len(names), owners, many or bytes(len(names)), files)


def test_distinct_checksums_of_one_algorithm_spare_every_read():
    files = Files(
        {"a.pdf": b"alice", "b.pdf": b"bobby", "c.pdf": b"carol"},
        {"a.pdf": "CRC64NVME x1", "b.pdf": "CRC64NVME x2", "c.pdf": "CRC64NVME x3"},
    )

    assert compare(files, [ALICE, BOB, CAROL]) == []
    assert files.read == {}


def test_a_copy_with_the_same_checksum_is_read_with_its_original_and_found():
    files = Files(
        {"a.pdf": b"alice", "b.pdf": b"alice", "c.pdf": b"carol"},
        {"a.pdf": "CRC32 same", "b.pdf": "CRC32 same", "c.pdf": "CRC32 other"},
    )

    assert compare(files, [ALICE, BOB, CAROL]) == [(0, 1), (1, 0)]
    assert files.read == {"a.pdf": 1, "b.pdf": 1}


def test_a_chance_match_of_checksums_is_settled_by_the_bytes():
    # GIVEN two letters whose 32-bit CRCs happen to be equal
    files = Files({"a.pdf": b"alice", "b.pdf": b"bobby"}, {"a.pdf": "CRC32 s", "b.pdf": "CRC32 s"})

    # THEN they are read, and found different
    assert compare(files, [ALICE, BOB]) == []
    assert files.read == {"a.pdf": 1, "b.pdf": 1}


@pytest.mark.parametrize(
    "checksums",
    [
        {"a.pdf": "CRC32 x1", "b.pdf": "SHA256 x1", "c.pdf": "CRC32 x3"},
        {"a.pdf": "CRC32 x1", "c.pdf": "CRC32 x3"},
        {},
    ],
    ids=["two-algorithms", "one-without", "none"],
)
def test_checksums_that_cannot_all_be_compared_leave_every_file_to_be_read_once(checksums):
    files = Files({"a.pdf": b"alice", "b.pdf": b"alice", "c.pdf": b"carol"}, checksums)

    assert compare(files, [ALICE, BOB, CAROL]) == [(0, 1), (1, 0)]
    assert files.read == {"a.pdf": 1, "b.pdf": 1, "c.pdf": 1}


def test_copies_of_one_recipient_are_found_only_beside_another_recipients():
    # GIVEN two copies of Alice's letter, hers both, and Bob's row naming a third
    files = Files({"a.pdf": b"alice", "a2.pdf": b"alice", "b.pdf": b"alice"}, {})

    # THEN each is found, each naming a file of another recipient
    assert compare(files, [ALICE, ALICE, BOB]) == [(0, 2), (1, 2), (2, 0)]
    # AND without Bob's, none
    assert compare(Files({"a.pdf": b"x", "a2.pdf": b"x"}, {}), [ALICE, ALICE]) == []


def test_a_copy_of_a_file_named_for_two_recipients_is_anothers_even_for_its_owner():
    # GIVEN Alice's file named by Bob's row too (many), and another of her files with its bytes
    files = Files({"a.pdf": b"alice", "a2.pdf": b"alice"}, {})

    assert compare(files, [ALICE, ALICE], many=b"\x01\x00") == [(0, 1), (1, 0)]


def test_a_local_file_is_hashed_in_the_version_listed_or_validation_stops(tmp_path):
    # GIVEN a folder of attachments, listed
    folder = tmp_path / "attachments"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(b"%PDF-1.4 alice")
    storage = LocalStorage(tmp_path, mounts={"attachments/": folder})
    [listed] = storage.list("attachments/")
    contents = StoredContents(storage, "attachments/")

    # THEN it is read in the version listed, and its print (a small file: all of it) stands
    # in for a checksum
    assert (
        contents.digest("a.pdf", listed.tag)
        == hashlib.blake2b(b"%PDF-1.4 alice", digest_size=32).digest()
    )
    assert contents.checksum("a.pdf", listed.tag) == f"SAMPLE {zlib.crc32(b'%PDF-1.4 alice'):08x}"

    # WHEN it is replaced by a file of the same size since the listing
    (folder / "new.pdf").write_bytes(b"%PDF-1.4 bobby")
    os.replace(folder / "new.pdf", folder / "a.pdf")

    # THEN reading it, or its print, stops validation, naming the file
    with pytest.raises(ObjectChanged, match=r"attachments/a\.pdf changed or went away"):
        contents.digest("a.pdf", listed.tag)
    with pytest.raises(ObjectChanged, match=r"attachments/a\.pdf changed or went away"):
        contents.checksum("a.pdf", listed.tag)


def _folder(tmp_path, files: dict[str, bytes]) -> tuple[StoredContents, dict[str, str]]:
    folder = tmp_path / "attachments"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    storage = LocalStorage(tmp_path, mounts={"attachments/": folder})
    tags = {info.key.rpartition("/")[2]: info.tag for info in storage.list("attachments/")}
    return StoredContents(storage, "attachments/"), tags


def _reads_whole(contents: StoredContents, monkeypatch) -> list[str]:
    """The names of the files ``contents`` reads whole from now on, in turn."""
    read: list[str] = []
    digest = contents.digest
    monkeypatch.setattr(
        contents, "digest", lambda name, tag: read.append(name) or digest(name, tag)
    )
    return read


def test_local_files_of_one_size_are_told_apart_by_samples_without_reading_them_whole(
    tmp_path, monkeypatch
):
    # GIVEN 40 letters of 64 KiB for 40 recipients, all different, two of them only at
    # the middle sample, two only at the end
    size = 64 * 1024
    base = bytes(range(256)) * (size // 256)
    letters = {f"l{n:02d}.pdf": n.to_bytes(2, "big") + base[2:] for n in range(36)}
    middle, end = size // 2, size - 10
    letters["m1.pdf"] = base[:middle] + b"\x01" + base[middle + 1 :]
    letters["m2.pdf"] = base[:middle] + b"\x02" + base[middle + 1 :]
    letters["e1.pdf"] = base[:end] + b"\x01" + base[end + 1 :]
    letters["e2.pdf"] = base[:end] + b"\x02" + base[end + 1 :]
    contents, tags = _folder(tmp_path, letters)
    read_whole = _reads_whole(contents, monkeypatch)
    names = sorted(letters)

    # WHEN they are compared THEN none is a copy, and none was read whole
    found = copies(names, [tags[n] for n in names], list(range(40)), bytes(40), contents)
    assert found == []
    assert read_whole == []


def test_local_files_alike_in_every_sample_are_decided_by_their_bytes(tmp_path, monkeypatch):
    # GIVEN two recipients' 64 KiB files alike in the three samples but not between them,
    # and a true copy of a third recipient's file for a fourth
    size = 64 * 1024
    base = bytes(range(256)) * (size // 256)
    letters = {
        "a.pdf": base[:10_000] + b"A" + base[10_001:],
        "b.pdf": base[:10_000] + b"B" + base[10_001:],
        "c.pdf": b"C" + base[1:],
        "d.pdf": b"C" + base[1:],
    }
    contents, tags = _folder(tmp_path, letters)
    read_whole = _reads_whole(contents, monkeypatch)
    names = sorted(letters)

    # WHEN they are compared THEN only the true copies are, and only the candidates were read
    found = copies(names, [tags[n] for n in names], [1, 2, 3, 4], bytes(4), contents)
    assert found == [(2, 3), (3, 2)]
    assert sorted(read_whole) == ["a.pdf", "b.pdf", "c.pdf", "d.pdf"]
