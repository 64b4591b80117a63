"""A local directory laid out like the bucket, with optional read-only mounts.

A mount maps a key prefix (e.g. ``attachments/``) to another directory, so a local run can
read an operator's attachments and templates where they are instead of copying them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, TypeVar

from mailmatrix.core.contents import SAMPLE_CHECKSUM, print_of_samples
from mailmatrix.disk import write_fault
from mailmatrix.errors import (
    FileNotWritten,
    InputFileError,
    NotFoundError,
    ObjectChanged,
    ObjectUnreadable,
    StorageError,
)
from mailmatrix.ports import ObjectInfo

T = TypeVar("T")

_CHUNK = 1024 * 1024
# The longest file name, in bytes, of the usual file systems (ext4, XFS, Btrfs, tmpfs, APFS).
NAME_MAX_BYTES = 255
# An object's user metadata is kept beside it as ".NAME.metadata.json" (_metadata_file).
_METADATA_SUFFIX = ".metadata.json"
# The longest name of a file a run can upload: its metadata's name must fit too.
MAX_UPLOAD_NAME_BYTES = NAME_MAX_BYTES - len("." + _METADATA_SUFFIX)
_OPEN_PLAIN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO: no wait


class LocalStorage:
    """The Storage port on a local folder: key ``a/b.csv`` is the file ``ROOT/a/b.csv``."""

    concurrent_reads = 1

    def __init__(
        self, root: str | Path, *, bucket: str = "local", mounts: Mapping[str, str | Path] = {}
    ) -> None:
        self.root = Path(root)
        self.bucket = bucket
        self.mounts = {prefix: Path(path) for prefix, path in mounts.items()}
        for prefix in self.mounts:
            if not prefix.endswith("/"):
                raise StorageError(f"local storage: mount prefix must end with '/': {prefix!r}")
        self._bases = [(prefix, str(path)) for prefix, path in self.mounts.items()]

    def _location(self, key: str) -> tuple[str, str, bool]:
        """(folder, path below it, whether it is a read-only mount) of the file behind ``key``."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise StorageError(f"local storage: invalid key {key!r}")
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
            raise StorageError(f"local storage: invalid key {key!r}")
        for prefix, base in self._bases:
            if key.startswith(prefix):
                return base, key[len(prefix) :], True
        return str(self.root), key, False

    def _path(self, key: str) -> tuple[Path, bool]:
        """Return the file behind ``key`` and whether it lies in a read-only mount."""
        base, below, mounted = self._location(key)
        return Path(base) / below, mounted

    def get(self, key: str, *, tag: str | None = None) -> bytes:
        """Return the object's bytes; with ``tag`` (from a listing), only while the file is
        still that one, unchanged (ObjectChanged otherwise).

        A file right in its folder (every attachment of a send) is read from its descriptor,
        in six system calls; through a buffered stream it took eleven."""
        found = self._plain_fd(key) if not tag or ":" in tag else None
        if found is None:
            try:
                with self.open(key) as stream:
                    return _read_version(stream, key, tag)
            except PermissionError as error:
                why = "permission denied"
                raise ObjectUnreadable(
                    f"local storage: {key}: cannot be read: {why}", details={"why": why}
                ) from error
        fd, info = found
        try:
            data = _read_all(fd, info.st_size)
            after = os.fstat(fd)
            if tag and _version_tag(after) != tag:  # after the read: see _read_version
                raise _changed(key, after)
            return data
        finally:
            os.close(fd)

    def open(self, key: str, *, version: str | None = None, tag: str | None = None) -> BinaryIO:
        """Open the object for reading; a symlink may not lead outside its folder.

        The folder keeps no versions (``version`` is refused). ``tag``: only while the file is
        that version (see _check_tag; else ObjectChanged), checked on the file opened: a later
        upload replaces the file (put_file), and the stream keeps reading the one checked.
        """
        if version is not None:
            raise StorageError(f"local storage: {key}: keeps no versions (asked for {version})")
        stream = self._open_plain(key)
        if stream is None:
            path, _ = self._path(key)
            if not path.is_file():
                match = self._nfc_match(path)
                if match is None:
                    raise NotFoundError(f"local storage: no such object: {key}")
                path = match
            self._confine(key, path)
            stream = path.open("rb")
        if tag:
            try:
                _check_tag(stream, key, tag)
            except BaseException:
                stream.close()
                raise
        return stream

    def _open_plain(self, key: str) -> BinaryIO | None:
        """Open the common case, a file right in its folder that is not a link, in three calls
        (it cannot lie outside the folder); None for anything else, to go the careful way."""
        found = self._plain_fd(key)
        if found is None:
            return None
        try:
            return os.fdopen(found[0], "rb")
        except BaseException:
            os.close(found[0])
            raise

    def _plain_fd(self, key: str) -> tuple[int, os.stat_result] | None:
        """_open_plain's descriptor and its stat, or None."""
        base, below, _ = self._location(key)
        if "/" in below:
            return None
        try:
            fd = os.open(os.path.join(base, below), _OPEN_PLAIN_FILE)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if stat.S_ISREG(info.st_mode):
            return fd, info
        os.close(fd)
        return None

    def _confine(self, key: str, path: Path) -> None:
        """Refuse a file whose real location lies outside the folder that serves ``key``."""
        base = next((b for prefix, b in self.mounts.items() if key.startswith(prefix)), self.root)
        if not path.resolve().is_relative_to(base.resolve()):
            raise NotFoundError(
                f"local storage: {key}: a link to a file outside {base.name}/ is not followed"
            )

    def _nfc_match(self, path: Path) -> Path | None:
        """Find a file stored under another Unicode normalisation of the same name (macOS NFD)."""
        wanted = unicodedata.normalize("NFC", path.name)
        try:
            with os.scandir(path.parent) as entries:  # closed when left at the file found
                for entry in entries:
                    if entry.is_file() and unicodedata.normalize("NFC", entry.name) == wanted:
                        return Path(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None

    def head(self, key: str, *, version: str | None = None, tag: str | None = None) -> ObjectInfo:
        """Return size, ETag (MD5 of the content, as S3 gives for single-part uploads), tag
        and the user metadata it was stored with (``version`` and ``tag`` as for ``open``)."""
        with self.open(key, version=version) as stream:
            etag = _md5(stream)
            size = stream.tell()
            version_tag = _version_tag(os.fstat(stream.fileno()))
        if tag and tag.strip('"') not in (etag, version_tag):
            raise _changed(key)
        path, _ = self._path(key)
        try:
            metadata = json.loads(_metadata_file(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metadata = {}
        try:  # when it was stored, as S3's LastModified (whole seconds there)
            modified: float | None = path.stat().st_mtime
        except OSError:
            modified = None
        return ObjectInfo(
            key=key, size=size, etag=etag, modified=modified, metadata=metadata, tag=version_tag
        )

    def put(
        self, key: str, data: bytes | bytearray, *, content_type: str | None = None
    ) -> ObjectInfo:
        """Write ``data`` atomically under ``key`` (FileNotWritten when it cannot be)."""
        path = self._writable(key)
        with _written(path) as tmp, open(tmp, "wb") as stream:
            stream.write(data)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return ObjectInfo(key=key, size=len(data), etag=etag)

    def put_file(
        self,
        key: str,
        path: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Copy the local file at ``path`` under ``key`` atomically, with user ``metadata``
        (as S3 keeps it: each upload replaces the last one's)."""
        target = self._writable(key)
        with (
            open(path, "rb") as source,  # a file that cannot be read is not one not written
            _written(target, metadata) as tmp,
            open(tmp, "wb") as copy,
        ):
            shutil.copyfileobj(source, copy)
        return self.head(key)

    def _writable(self, key: str) -> Path:
        path, mounted = self._path(key)
        if mounted:
            raise StorageError(f"local storage: {key}: lies in a read-only mount")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _not_written(path, error) from error
        return path

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield the objects under ``prefix`` in key order (size, identity and tag; no ETag)."""
        for mount, base in self.mounts.items():
            if prefix.startswith(mount):
                yield from _walk(base, mount, prefix)
                return
        yield from _walk(self.root, "", prefix)

    def checksum(self, key: str, *, tag: str | None = None) -> str | None:
        """A folder keeps no checksums; a print of the file stands in: the CRC-32 of three
        samples of SAMPLE_BYTES (start, middle, end; the whole file when it is smaller: see
        contents.sample_print).
        Files whose prints differ differ; equal prints only make two files candidates, whose
        bytes decide (contents.copies). Hashing every file of a size whole cost validation of
        the bench's 10,000 letters of 50 KB, all one size, 1.6 s; the prints, 0.15 s."""
        return self._on_file(key, tag, _sample_print)

    def first_bytes(self, key: str, count: int, *, tag: str | None = None) -> bytes | None:
        """The file's first ``count`` bytes: one read, about 5 µs a file (a few times the
        stat its listing took)."""
        return self._on_file(key, tag, lambda fd, size: os.pread(fd, count, 0))

    def _on_file(self, key: str, tag: str | None, use: Callable[[int, int], T]) -> T:
        """``use(fd, size)`` of the file behind ``key``, open on ``fd``, of ``size`` bytes
        (``tag`` as for ``open``)."""
        found = self._plain_fd(key) if not tag or ":" in tag else None
        if found is None:  # a link, a file below its folder, an ETag to check: the careful way
            with self.open(key, tag=tag) as stream:
                return use(stream.fileno(), os.fstat(stream.fileno()).st_size)
        fd, info = found
        try:
            if tag and _version_tag(info) != tag:
                raise _changed(key)
            return use(fd, info.st_size)
        finally:
            os.close(fd)


def check_upload_name(path: Path) -> None:
    """Refuse a recipients file whose name the local bucket cannot keep under incoming/, where
    a run copies the file under that very name (the name is the campaign: campaign_id_for):
    a hidden name, which listings leave out, or one too long for the hidden file of its
    metadata beside it. Measured as the file system writes it (UTF-8 on Linux and macOS)."""
    if path.name.startswith("."):
        raise InputFileError(f"{path}: a hidden file's name: rename it without the leading '.'")
    size = len(os.fsencode(path.name))
    if size > MAX_UPLOAD_NAME_BYTES:
        raise InputFileError(
            f"{path}: the file name is too long: {size} bytes in UTF-8, where a run takes at"
            f" most {MAX_UPLOAD_NAME_BYTES} (about {MAX_UPLOAD_NAME_BYTES // 3} CJK characters)"
            " for the copy it keeps in its workdir: rename the file to a shorter name"
        )


def open_recipients(path: Path) -> BinaryIO:
    """Open the recipients file ``path`` (or the file a link names) to read it.

    Opened without waiting, then checked: a plain open of a FIFO waits for a writer, for
    ever when there is none. Anything but a regular file (a pipe, device or folder), or no
    file at all, is an InputFileError; another reason it cannot be opened, an OSError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file: give the CSV file itself") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputFileError(
                f"{path}: not a regular file (a pipe, device or folder): give the CSV file itself"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _sample_print(fd: int, size: int) -> str:
    """LocalStorage.checksum's print of the file open on ``fd``: contents.sample_print of
    its bytes, read as three samples (the ledger keeps the same print of a letter's file)."""
    return SAMPLE_CHECKSUM + print_of_samples(lambda offset, n: os.pread(fd, n, offset), size)


def _md5(stream: BinaryIO) -> str:
    """The hex MD5 of the rest of ``stream``, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _check_tag(stream: BinaryIO, key: str, tag: str, data: bytes | None = None) -> None:
    """Raise ObjectChanged unless the file open on ``stream`` is the version ``tag`` names:
    a tag from a listing (its stat: see _version_tag), or its ETag (the MD5 of its content,
    as an upload's event names it: of ``data`` when read already, else of the rest of
    ``stream``, which is set back where it was)."""
    info = None
    if ":" in tag:  # a listing's tag; an ETag is hex alone
        info = os.fstat(stream.fileno())
        current = _version_tag(info)
    elif data is not None:
        current = hashlib.md5(data, usedforsecurity=False).hexdigest()
    else:
        position = stream.tell()
        current = _md5(stream)
        stream.seek(position)
    if current != tag.strip('"'):
        raise _changed(key, info)


def _read_version(stream: BinaryIO, key: str, tag: str | None) -> bytes:
    """Read ``stream`` whole; with ``tag``, refuse it unless the file read is still that
    version. The file's own stat, taken after the read, decides: no other file can have been
    put between the check and the read, and a rewrite during the read shows."""
    data = stream.read()
    if tag:
        _check_tag(stream, key, tag, data)
    return data


def _read_all(fd: int, size: int) -> bytes:
    """The rest of the file open on ``fd``, ``size`` bytes as its stat said (more or fewer
    if it is being written meanwhile: read to its end all the same)."""
    first = os.read(fd, size + 1)
    if not first:
        return first
    chunks = [first]
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return first if len(chunks) == 1 else b"".join(chunks)


def _changed(key: str, info: os.stat_result | None = None) -> StorageError:
    """Why the file at ``key`` (its stat now: ``info``) is not the version asked for: one whose
    mode now lets no one read it was made unreadable (root reads it all the same; nobody else
    could), else it was replaced, rewritten or relinked."""
    if info is not None and not info.st_mode & 0o444:
        mode = stat.S_IMODE(info.st_mode)
        why = f"its mode was changed to {mode:03o}, which lets no one read it"
        message = f"local storage: {key}: may not be read: {why}"
        return ObjectUnreadable(message, details={"why": why})
    return ObjectChanged(
        f"local storage: {key}: not the version asked for (replaced, rewritten or relinked since)"
    )


def _metadata_file(path: Path) -> Path:
    """Where the user metadata of the object at ``path`` is kept: a hidden file beside it
    (listings leave hidden files out)."""
    return path.with_name(f".{path.name}{_METADATA_SUFFIX}")


@contextlib.contextmanager
def _written(path: Path, metadata: Mapping[str, str] | None = None) -> Iterator[str]:
    """A temporary file beside ``path`` for the block to write, then put in its place with
    its ``metadata``; a write that fails is a FileNotWritten naming ``path``, and leaves
    neither the temporary file nor a change at ``path``."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        yield tmp
        _keep_metadata(path, metadata)
        os.replace(tmp, path)
    except OSError as error:
        raise _not_written(path, error) from error
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _not_written(path: Path, error: OSError) -> FileNotWritten:
    """The error of the object at ``path`` that ``error`` kept from being written."""
    return FileNotWritten(f"cannot write {path}: {write_fault(error)}")


def _keep_metadata(path: Path, metadata: Mapping[str, str] | None) -> None:
    """Store ``metadata`` for the object about to be written at ``path``, or remove the last
    upload's: it must not carry over."""
    where = _metadata_file(path)
    if not metadata:
        where.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump(dict(metadata), stream)
    os.replace(tmp, where)


def _walk(base: Path, key_prefix: str, wanted: str) -> Iterator[ObjectInfo]:
    """Yield files below ``base`` as objects keyed ``key_prefix + relative path``, and each
    empty folder as S3 lists an empty folder: its path and "/", of no bytes.

    One ``stat`` a file (the directory entries say which are links and folders): a folder of
    10,000 attachments is listed at every validation. That stat follows a symlink, so each
    object's identity is the file it reaches (device and inode): a symlink and its target, or
    two hard links, are one file under two keys. The same stat gives each object's tag.
    """
    if not base.is_dir():
        return
    found: list[tuple[str, os.DirEntry[str] | None]] = []  # None: an empty folder
    real_base = os.path.realpath(base)
    folders = [(str(base), "")]
    while folders:
        folder, rel = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # removed or unreadable meanwhile: nothing below it
            continue
        if rel and not entries and (key_prefix + rel).startswith(wanted):
            found.append((key_prefix + rel, None))
        for entry in entries:
            if entry.name.startswith("."):  # our .tmp- files, .DS_Store and other hidden files
                continue
            relkey = rel + entry.name
            if entry.is_dir(follow_symlinks=False):  # linked folders are not entered
                folders.append((entry.path, relkey + "/"))
                continue
            # Only a link itself can lead out of the folder; links out of it don't count.
            if entry.is_symlink() and (
                os.path.commonpath([os.path.realpath(entry.path), real_base]) != real_base
            ):
                continue
            key = key_prefix + relkey
            if key.startswith(wanted):
                found.append((key, entry))
    found.sort(key=lambda pair: pair[0])
    for key, item in found:
        if item is None:  # listed as S3 lists a folder made in its console: "name/", empty
            yield ObjectInfo(key=key, size=0)
            continue
        try:
            info = item.stat()
        except OSError:  # a dangling link, or the file went away: no object
            continue
        if stat.S_ISREG(info.st_mode):  # not FIFOs, sockets or devices named like files
            yield ObjectInfo(
                key=key, size=info.st_size, identity=_identity(info), tag=_version_tag(info)
            )


def _identity(info: os.stat_result) -> str | None:
    """The file a stat describes, as device and inode; None where the system gives no inode."""
    return f"{info.st_dev}:{info.st_ino}" if info.st_ino else None


def _version_tag(info: os.stat_result) -> str:
    """A file's version as a stat shows it: another file in its place has another device or
    inode, a rewrite another change time (which tools do not set back, unlike the modification
    time: ``cp -p`` or ``touch -r`` over a file of the same size still shows)."""
    return (
        f"{info.st_dev:x}:{info.st_ino:x}:{info.st_size:x}:{info.st_mtime_ns:x}"
        f":{info.st_ctime_ns:x}"
    )
