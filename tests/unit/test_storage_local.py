"""The local bucket: keys map to files, mounts are read-only, names match across NFC/NFD."""

from __future__ import annotations

import errno
import gc
import hashlib
import io
import os
import unicodedata
import warnings

import pytest

from mailmatrix.adapters import storage_local
from mailmatrix.adapters.storage_local import (
    MAX_UPLOAD_NAME_BYTES,
    LocalStorage,
    check_upload_name,
)
from mailmatrix.errors import (
    FileNotWritten,
    InputFileError,
    NotFoundError,
    ObjectChanged,
    ObjectUnreadable,
    StorageError,
)


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


def test_finding_a_file_by_another_normalisation_closes_the_folder_listing(tmp_path):
    # GIVEN a folder of many files, one stored under its NFD name (listed last only rarely)
    nfc = "Diplom_Zdeňka Šťastná.pdf"
    (tmp_path / "attachments").mkdir()
    for name in [unicodedata.normalize("NFD", nfc), *(f"{n}.pdf" for n in range(40))]:
        (tmp_path / "attachments" / name).write_bytes(b"pdf")

    # WHEN it is found by its NFC name (the listing left before its end)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert LocalStorage(tmp_path).get(f"attachments/{nfc}") == b"pdf"
        gc.collect()

    # THEN the listing was closed, not left to the garbage collector
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


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


@pytest.mark.parametrize("method", ["put", "put_file"])
def test_a_write_with_no_room_is_named_and_leaves_nothing_behind(tmp_path, monkeypatch, method):
    # GIVEN a bucket holding an object, on a disk that fills up as the next one is written
    source = tmp_path / "manifest.jsonl"
    source.write_text('{"row": 2}\n')
    storage = LocalStorage(tmp_path / "bucket")
    storage.put("reports/c/rejects.csv", b"row\n")

    class FullDisk(io.FileIO):
        """A file that takes a few bytes, then finds no room."""

        def write(self, data):
            super().write(bytes(data[:3]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def opened(path, mode):
        return FullDisk(path, "w") if "w" in mode else io.FileIO(path, mode)

    monkeypatch.setattr(storage_local, "open", opened, raising=False)

    # WHEN the object is written over
    with pytest.raises(FileNotWritten) as failed:
        if method == "put":
            storage.put("reports/c/rejects.csv", b"row\n2\n")
        else:
            storage.put_file("reports/c/rejects.csv", str(source))

    # THEN the error names the file and says why in words (it said "[Errno 28]" alone)
    target = tmp_path / "bucket" / "reports" / "c" / "rejects.csv"
    assert failed.value.message == (
        f"cannot write {target}: the disk holding it is full (No space left on device)"
    )
    # AND the object is as it was, and no temporary file is left beside it
    monkeypatch.undo()
    assert storage.get("reports/c/rejects.csv") == b"row\n"
    assert [path.name for path in target.parent.iterdir()] == ["rejects.csv"]


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
    stream = storage.open("incoming/a.csv", tag=etag)

    # WHEN another upload replaces it
    storage.put("incoming/a.csv", b"second")

    # THEN the stream opened reads the first still; a new read by the old ETag is refused
    with stream:
        assert stream.read() == b"first"
    for read in (storage.open, storage.head):
        with pytest.raises(ObjectChanged, match=r"incoming/a\.csv: not the version asked for"):
            read("incoming/a.csv", tag=etag)
    assert storage.head("incoming/a.csv", tag=f'"{storage.head("incoming/a.csv").etag}"')
    # AND a folder keeps no versions: asking for one is an error, not another file's content
    with pytest.raises(StorageError, match="keeps no versions"):
        storage.open("incoming/a.csv", version="v1")


def _listed_tag(storage: LocalStorage, key: str) -> str:
    return next(o.tag for o in storage.list(key) if o.key == key)


def test_a_fetch_by_tag_reads_the_file_listed_and_no_other_of_its_size(tmp_path):
    # GIVEN a mounted folder with two letters of the same size, listed with their tags
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "anna.pdf").write_bytes(b"%PDF Anna 68,000")
    (folder / "bob.pdf").write_bytes(b"%PDF Bob 61,000 ")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": folder})
    tags = {o.key: o.tag for o in storage.list("attachments/")}
    assert len(set(tags.values())) == 2 and all(tags.values())

    # THEN each is read by its tag, and a fetch without one is not checked
    assert storage.get("attachments/anna.pdf", tag=tags["attachments/anna.pdf"]).startswith(
        b"%PDF Anna"
    )
    assert storage.get("attachments/bob.pdf", tag=None) == b"%PDF Bob 61,000 "

    # WHEN Bob's letter is replaced by a file of the same size (written beside it, moved over)
    (folder / "new.pdf").write_bytes(b"%PDF Bob 99,000 ")
    os.replace(folder / "new.pdf", folder / "bob.pdf")

    # THEN a fetch of the version listed is refused
    with pytest.raises(ObjectChanged, match=r"attachments/bob\.pdf: not the version asked for"):
        storage.get("attachments/bob.pdf", tag=tags["attachments/bob.pdf"])


def test_a_rewrite_in_place_with_its_times_set_back_is_seen(tmp_path):
    # GIVEN a listed file
    storage = LocalStorage(tmp_path)
    path = tmp_path / "attachments" / "bob.pdf"
    path.parent.mkdir()
    path.write_bytes(b"%PDF Bob 61,000 ")
    before = os.stat(path)
    tag = _listed_tag(storage, "attachments/bob.pdf")

    # WHEN it is rewritten in place, same size, its times set back as `cp -p` or `touch -r`
    # would (same inode, same size, same modification time)
    with open(path, "r+b") as stream:
        stream.write(b"%PDF Bob 99,000 ")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_ino == before.st_ino
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns

    # THEN the change time tells it apart
    with pytest.raises(ObjectChanged):
        storage.get("attachments/bob.pdf", tag=tag)


def test_a_name_relinked_to_another_file_of_its_size_is_refused(tmp_path):
    # GIVEN two letters of the same size, one reached through a symlink, listed
    folder = tmp_path / "attachments"
    folder.mkdir()
    (folder / "anna.pdf").write_bytes(b"%PDF Anna 68,000")
    (folder / "letters-bob.pdf").write_bytes(b"%PDF Bob 61,000 ")
    (folder / "bob.pdf").symlink_to("letters-bob.pdf")
    storage = LocalStorage(tmp_path)
    tag = _listed_tag(storage, "attachments/bob.pdf")
    assert storage.get("attachments/bob.pdf", tag=tag) == b"%PDF Bob 61,000 "

    # WHEN Bob's name is relinked to Anna's letter
    (folder / "bob.pdf").unlink()
    (folder / "bob.pdf").symlink_to("anna.pdf")

    # THEN the link's new file is not the one listed
    with pytest.raises(ObjectChanged):
        storage.get("attachments/bob.pdf", tag=tag)


def test_a_version_is_named_by_its_tag_or_its_etag_for_get_open_and_head(tmp_path):
    # GIVEN a stored file, its tag and ETag as head gives them
    storage = LocalStorage(tmp_path)
    storage.put("incoming/a.csv", b"first")
    info = storage.head("incoming/a.csv")
    assert info.tag and info.etag and info.tag != info.etag

    # THEN either names it to every read
    for tag in (info.tag, info.etag):
        assert storage.get("incoming/a.csv", tag=tag) == b"first"
        with storage.open("incoming/a.csv", tag=tag) as stream:
            assert stream.read() == b"first"
        assert storage.head("incoming/a.csv", tag=tag).tag == info.tag

    # WHEN another upload replaces it THEN no read by either reaches the new one
    storage.put("incoming/a.csv", b"other")
    for tag in (info.tag, info.etag):
        for read in (storage.get, storage.open, storage.head):
            with pytest.raises(ObjectChanged):
                read("incoming/a.csv", tag=tag)


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1024 * 1024 + 7])
def test_a_file_right_in_its_folder_is_read_whole_by_tag_or_without(tmp_path, size):
    # GIVEN a letter right in a mounted folder (the descriptor path), of any size
    folder = tmp_path / "pdfs"
    folder.mkdir()
    content = os.urandom(size)
    (folder / "anna.pdf").write_bytes(content)
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": folder})

    # THEN it is read whole, with its listed tag and without one
    tag = _listed_tag(storage, "attachments/anna.pdf")
    assert storage.get("attachments/anna.pdf", tag=tag) == content
    assert storage.get("attachments/anna.pdf") == content


@pytest.mark.parametrize("size", [0, 100, 3 * 4096, 3 * 4096 + 1, 51200])
def test_a_folders_print_of_a_file_is_the_print_of_its_bytes(tmp_path, size):
    # The ledger keeps sample_print of a letter's bytes; validation compares it with the
    # folder's print of a file, read as samples: the two must agree at every size.
    from mailmatrix.core.contents import SAMPLE_CHECKSUM, sample_print

    content = os.urandom(size)
    (tmp_path / "attachments").mkdir()
    (tmp_path / "attachments" / "a.pdf").write_bytes(content)
    storage = LocalStorage(tmp_path)

    assert storage.checksum("attachments/a.pdf") == SAMPLE_CHECKSUM + sample_print(content)


def test_a_files_first_bytes_are_read_in_the_version_listed_and_never_through_a_link_out(
    tmp_path,
):
    # GIVEN a letter in a mounted folder, a link in it to a file outside, a file in a subfolder
    folder = tmp_path / "pdfs"
    (folder / "sub").mkdir(parents=True)
    (folder / "anna.pdf").write_bytes(b"%PDF-1.7 anna")
    (folder / "sub" / "ben.pdf").write_bytes(b"%PDF-1.4 ben")
    (tmp_path / "secret.pdf").write_bytes(b"secret")
    (folder / "link.pdf").symlink_to(tmp_path / "secret.pdf")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": folder})
    tag = _listed_tag(storage, "attachments/anna.pdf")

    # THEN the start of each file in the folder is read, with its listed tag or without one
    assert storage.first_bytes("attachments/anna.pdf", 5, tag=tag) == b"%PDF-"
    assert storage.first_bytes("attachments/anna.pdf", 1024) == b"%PDF-1.7 anna"
    assert storage.first_bytes("attachments/sub/ben.pdf", 8) == b"%PDF-1.4"
    # AND not through the link, nor once the file is another version
    with pytest.raises(NotFoundError):
        storage.first_bytes("attachments/link.pdf", 5)
    (folder / "anna.pdf").write_bytes(b"Dear Anna")
    with pytest.raises(ObjectChanged):
        storage.first_bytes("attachments/anna.pdf", 5, tag=tag)


def test_the_longest_upload_name_is_the_longest_the_bucket_keeps_with_its_metadata(tmp_path):
    # GIVEN files named with the longest name an upload may have, and one byte more
    longest = tmp_path / ("u" * (MAX_UPLOAD_NAME_BYTES - 4) + ".csv")
    longer = tmp_path / ("u" * (MAX_UPLOAD_NAME_BYTES - 3) + ".csv")
    for path in (longest, longer):
        path.write_bytes(b"Email\n")
    storage = LocalStorage(tmp_path / "bucket")

    # WHEN each is checked and put under incoming/ with metadata, as a run puts it
    check_upload_name(longest)
    storage.put_file(f"incoming/{longest.name}", str(longest), metadata={"retry": "true"})
    with pytest.raises(InputFileError, match="the file name is too long: 241 bytes in UTF-8"):
        check_upload_name(longer)

    # THEN the first is kept; the file system takes no name of the second's metadata file
    assert storage.head(f"incoming/{longest.name}").metadata == {"retry": "true"}
    with pytest.raises(FileNotWritten, match=f"cannot write .*{longer.name}: File name too long"):
        storage.put_file(f"incoming/{longer.name}", str(longer), metadata={"retry": "true"})


def test_a_hidden_upload_name_is_refused(tmp_path):
    with pytest.raises(InputFileError, match="a hidden file's name"):
        check_upload_name(tmp_path / ".offers.csv")


def test_a_listed_file_made_unreadable_since_is_named_unreadable_not_changed(tmp_path):
    # GIVEN a mounted folder with a letter, listed with its tag
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "anna.pdf").write_bytes(b"%PDF Anna 68,000")
    storage = LocalStorage(tmp_path / "bucket", mounts={"attachments/": folder})
    (listed,) = storage.list("attachments/")

    # WHEN its mode is changed so that no one may read it (root reads it all the same)
    (folder / "anna.pdf").chmod(0)

    # THEN a fetch of the version listed says so, not that the file was replaced
    with pytest.raises(ObjectUnreadable) as raised:
        storage.get(listed.key, tag=listed.tag)
    assert raised.value.details["why"] == "its mode was changed to 000, which lets no one read it"


def test_a_file_the_process_may_not_read_is_named_unreadable(tmp_path, monkeypatch):
    # GIVEN a file whose every open is refused for want of permission (as for a user other
    # than root, once its mode is 000)
    storage = LocalStorage(tmp_path)
    storage.put("attachments/anna.pdf", b"%PDF Anna")
    (listed,) = storage.list("attachments/")
    opened = os.open

    def refused(path, *args, **kwargs):
        if str(path).endswith("anna.pdf"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)  # the plain way, and the careful one's open
    monkeypatch.setattr("pathlib.Path.open", lambda self, *a, **k: refused(self))

    # WHEN it is fetched THEN the error says it may not be read, as a storage error
    with pytest.raises(ObjectUnreadable, match=r"anna\.pdf: cannot be read: permission denied"):
        storage.get(listed.key, tag=listed.tag)
