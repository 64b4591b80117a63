"""How the user called MailMatrix, for the commands it prints for them to run next."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys

NAME = "mailmatrix"


@functools.cache
def program() -> str:
    """The command that runs this MailMatrix from where it was called: ``mailmatrix`` when
    the shell finds this very program by that name (an activated venv, an installed tool),
    else the path it was called by, relative as called (``.venv/bin/mailmatrix`` from the
    folder the README works in) or whole as called, so a printed command works when pasted.
    Anything else calling the code (a test, a Lambda) gets the name."""
    called = sys.argv[0] if sys.argv else ""
    # by its name, or by a link of another name to it (a path: found the same way again)
    linked = os.sep in called and os.path.basename(os.path.realpath(called)) == NAME
    if os.path.basename(called) != NAME and not linked:
        return NAME
    found = shutil.which(NAME)
    if found and _same_file(found, called):
        return NAME
    if os.path.isabs(called):
        return shlex.quote(os.path.normpath(called))
    path = os.path.abspath(called)
    here = os.getcwd()
    if path.startswith(here.rstrip(os.sep) + os.sep):
        path = os.path.relpath(path, here)
    return shlex.quote(path)


def _same_file(one: str, other: str) -> bool:
    """Whether the two paths name one file (either may be gone)."""
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False
