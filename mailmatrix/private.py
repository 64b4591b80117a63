"""Files open to their owner only: what a local run writes holds names, addresses, letters."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Make what is created meanwhile open to its owner only, whatever the umask: folders
    0700, files 0600. Worker processes forked meanwhile keep it. A folder or file that
    exists keeps its mode: a workdir the user made is theirs to open or close.

    Also a decorator (``@private_files()``). The umask is the process's: meanwhile, files
    written elsewhere by this process are made so too.
    """
    umask = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(umask)
