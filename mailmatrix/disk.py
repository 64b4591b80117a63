"""Why a file of a local run could not be written, in the operator's words.

A full disk, a used-up quota and the file size limit (``ulimit -f``, RLIMIT_FSIZE) each end a
write with an errno that Python words as "No space left on device", "Disk quota exceeded" and
"File too large", without saying which limit, or with no file at all for a write to an open
file; SQLite words them all as "disk I/O error" or "database or disk is full".
"""

from __future__ import annotations

import errno

from mailmatrix.core.failures import DISK_FULL, QUOTA_USED, SIZE_LIMIT

KIB = 1024


def file_size_limit() -> int | None:
    """How large a file this process writes may grow (the soft RLIMIT_FSIZE), in bytes; None
    without a limit, or on a system without one."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def size_limit_words(limit: int) -> str:
    """A file that reached ``limit`` bytes, the file size limit, in plain words."""
    size = f"{limit // KIB} KiB" if limit % KIB == 0 else f"{limit} bytes"
    return f"it reached {SIZE_LIMIT}, {size} (ulimit -f)"


def no_room(error: OSError) -> str | None:
    """Why the write that raised ``error`` found no room, in plain words; None when it failed
    for another reason (access, a damaged disk)."""
    if error.errno == errno.ENOSPC:
        return DISK_FULL
    if error.errno == errno.EDQUOT:
        return QUOTA_USED
    if error.errno != errno.EFBIG:
        return None
    limit = file_size_limit()
    if limit is None:
        return "it is as large as the file system lets a file be"
    return size_limit_words(limit)


# Why a file could not be written, in the operator's words, by the error's errno (no room:
# no_room, which names the file size limit's value).
_WRITE_FAULTS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "not permitted: the file or its folder may be immutable, as `lsattr` shows",
}


def write_fault(error: OSError) -> str:
    """Why ``error`` kept a file from being written, in plain words with the system's own,
    e.g. ``the disk is full (No space left on device)``."""
    said = no_room(error) or _WRITE_FAULTS.get(error.errno or 0)
    system = error.strerror or str(error)
    return f"{said} ({system})" if said else system
