"""The local bucket: keys map to files, mounts are read-only, names match across NFC/NFD."""

from __future__ import annotations

import hashlib
import os
import unicodedata

import pytest

from mailmatrix.adapters.storage_local import LocalStorage
from mailmatrix.errors import NotFoundError, ObjectChanged, StorageError


def test_put_get_head_and_list_in_key_order(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")

    storage.put("reports/b.txt", b"bee")
    info = storage.put("reports/a.txt", b"ay")

    assert storage.get("reports/a.txt") == b"ay"
    assert info.etag == hashlib.md5(b"ay").hexdigest()
    assert storage.head("reports/b.txt").size == 3
    assert [o.key for o in storage.list("reports/")] == ["reports/a.txt", "reports/b.txt"]
    assert [o.key for o in storage.list("reports/b")] == ["reports/b.txt"]


def test_missing_object_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match=r"no such object: incoming/x\.csv"):
        LocalStorage(tmp_path).get("incoming/x.csv")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a\\b", "a\x00b", ""])
def test_keys_cannot_escape_the_bucket(tmp_path, key):
    with pytest.raises(StorageError, match="invalid key"):
        LocalStorage(tmp_path).put(key, b"x")


def test_mounts_serve_another_folder_read_only(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "alice.pdf").write_bytes(b"%PDF-1.4")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": pdfs})

    assert storage.get("attachments/alice.pdf") == b"%PDF-1.4"
    assert [o.key for o in storage.list("attachments/")] == ["attachments/alice.pdf"]
    with pytest.raises(StorageError, match="read-only mount"):
        storage.put("attachments/evil.pdf", b"x")


def test_a_file_stored_in_nfd_is_found_by_its_nfc_name(tmp_path):
    nfc = "Diplom_Zdeňka Šťastná.pdf"
    (tmp_path / "attachments").mkdir()
    (tmp_path / "attachments" / unicodedata.normalize("NFD", nfc)).write_bytes(b"pdf")

    assert LocalStorage(tmp_path).get(f"attachments/{nfc}") == b"pdf"


def test_put_file_copies_atomically(tmp_path):
    source = tmp_path / "manifest.jsonl"
    source.write_text('{"row": 2}\n')
    storage = LocalStorage(tmp_path / "bucket")

    info = storage.put_file("validated/c/manifest.jsonl", str(source))

    assert storage.get("validated/c/manifest.jsonl") == b'{"row": 2}\n'
    assert info.size == 11
    assert not [
        p for p in (tmp_path / "bucket" / "validated" / "c").iterdir() if p.name.startswith(".tmp")
    ]


def test_a_symlink_out_of_a_mount_is_not_followed(tmp_path):
    # GIVEN an attachments folder with a link to a file elsewhere on the machine
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(b"%PDF-1.4 not yours")
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "link.pdf").symlink_to(secret)
    (pdfs / "inside.pdf").write_bytes(b"%PDF-1.4 ok")
    (pdfs / "alias.pdf").symlink_to(pdfs / "inside.pdf")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": pdfs})

    # THEN the outside target is refused as missing; a link inside the folder still works
    with pytest.raises(NotFoundError, match="outside pdfs/"):
        storage.get("attachments/link.pdf")
    assert storage.get("attachments/alias.pdf") == b"%PDF-1.4 ok"
    assert [o.key for o in storage.list("attachments/")] == [
        "attachments/alias.pdf",
        "attachments/inside.pdf",
    ]


def test_a_linked_folder_out_of_a_mount_and_a_folder_as_key_are_not_read(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.pdf").write_bytes(b"%PDF-1.4 not yours")
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "sub").symlink_to(outside, target_is_directory=True)
    (pdfs / "folder.pdf").mkdir()
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": pdfs})

    with pytest.raises(NotFoundError, match="outside pdfs/"):
        storage.get("attachments/sub/x.pdf")
    with pytest.raises(NotFoundError, match="no such object"):
        storage.get("attachments/folder.pdf")


def test_the_listing_leaves_out_dangling_links_and_special_files(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "ok.pdf").write_bytes(b"%PDF-1.4")
    (pdfs / "dangling.pdf").symlink_to(pdfs / "missing.pdf")
    os.mkfifo(pdfs / "fifo.pdf")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": pdfs})
    assert [(o.key, o.size) for o in storage.list("attachments/")] == [("attachments/ok.pdf", 8)]


def test_the_listing_gives_links_to_one_file_one_identity(tmp_path):
    # GIVEN a folder with two distinct files alike in content, a symlink to one of them, and
    # a hard link to the other
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for name in ("a.pdf", "b.pdf"):
        (pdfs / name).write_bytes(b"%PDF-1.4 same bytes")
    (pdfs / "a-link.pdf").symlink_to("a.pdf")
    os.link(pdfs / "b.pdf", pdfs / "b-hard.pdf")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": pdfs})

    # WHEN listed
    identity = {
        o.key.removeprefix("attachments/"): o.identity for o in storage.list("attachments/")
    }

    # THEN a link and its target are one file, two hard links are one file, and the distinct
    # files (same bytes) are two
    assert set(identity) == {"a.pdf", "a-link.pdf", "b.pdf", "b-hard.pdf"}
    assert identity["a-link.pdf"] == identity["a.pdf"]
    assert identity["b-hard.pdf"] == identity["b.pdf"]
    assert identity["a.pdf"] != identity["b.pdf"]
    assert None not in identity.values()


def test_an_upload_keeps_its_own_metadata_as_s3_does(tmp_path):
    storage = LocalStorage(tmp_path)
    source = tmp_path / "offers.csv"
    source.write_text("Email\na@example.com\n", encoding="utf-8")
    # GIVEN a file stored with user metadata
    storage.put_file(
        "incoming/offers.csv", str(source), metadata={"mailmatrix-retry-failed": "true"}
    )

    # THEN head gives it back, with when it was stored, and a listing shows the object alone
    head = storage.head("incoming/offers.csv")
    assert head.metadata == {"mailmatrix-retry-failed": "true"}
    assert head.modified == (tmp_path / "incoming" / "offers.csv").stat().st_mtime
    assert [info.key for info in storage.list("incoming/")] == ["incoming/offers.csv"]

    # WHEN the file is stored again without metadata, or written by put THEN none is left over
    storage.put_file("incoming/offers.csv", str(source))
    assert storage.head("incoming/offers.csv").metadata == {}
    storage.put_file("incoming/offers.csv", str(source), metadata={"a": "b"})
    storage.put("incoming/offers.csv", b"Email\n")
    assert storage.head("incoming/offers.csv").metadata == {}


def test_an_object_is_read_only_while_its_etag_is_the_one_given(tmp_path):
    # GIVEN a file stored, its ETag taken, and a stream opened on it while it has that ETag
    storage = LocalStorage(tmp_path)
    etag = storage.put("incoming/a.csv", b"first").etag
    stream = storage.open("incoming/a.csv", if_match=etag)

    # WHEN another upload replaces it
    storage.put("incoming/a.csv", b"second")

    # THEN the stream opened reads the first still; a new read by the old ETag is refused
    with stream:
        assert stream.read() == b"first"
    for read in (storage.open, storage.head):
        with pytest.raises(ObjectChanged, match=f"incoming/a.csv: its ETag is no longer {etag}"):
            read("incoming/a.csv", if_match=etag)
    assert storage.head("incoming/a.csv", if_match=f'"{storage.head("incoming/a.csv").etag}"')
    # AND a folder keeps no versions: asking for one is an error, not another file's content
    with pytest.raises(StorageError, match="keeps no versions"):
        storage.open("incoming/a.csv", version="v1")
