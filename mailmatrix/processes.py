"""Which process holds something, and whether it still runs (same machine only).

A local execution, a ledger claim and a batch being sent each record the process behind them:
its host, pid and start time (the start time tells a reused pid apart). Anything recorded on
another host, or before processes were recorded, counts as running: only the lease or the
deadline that goes with it can end it then.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_TOKEN_SEPARATOR = "|"  # no host name holds one
_tokens: dict[int, str] = {}  # process_token's, by pid


def this_process() -> dict[str, Any]:
    """What identifies this process: host, pid, and its start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": _started(os.getpid())}


def process_token() -> str:
    """This process as one string (host|pid|start time), for a ledger column."""
    pid = os.getpid()
    cached = _tokens.get(pid)  # per pid: a forked worker is a process of its own
    if cached is None:
        found = this_process()
        cached = _tokens[pid] = _TOKEN_SEPARATOR.join(
            (found["host"], str(pid), found["since"] or "")
        )
    return cached


def token_running(token: str | None) -> bool:
    """Whether the process a ``process_token`` names still runs (True when unknown)."""
    if not token:
        return True
    host, _, rest = token.partition(_TOKEN_SEPARATOR)
    pid, _, since = rest.partition(_TOKEN_SEPARATOR)
    if not pid.isdigit():
        return True
    return running({"host": host, "pid": int(pid), "since": since or None})


def running(process: Any) -> bool:
    """Whether the process in ``process`` (see this_process) still runs; True when unknown
    (a process on another machine, or a record from before processes were recorded)."""
    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return True
    pid = process.get("pid")
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _started(pid)
    if started == "ended":
        return False
    return process.get("since") is None or started is None or started == process.get("since")


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid;
    "ended" for a process that is dead but not yet reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20:
        return None
    return "ended" if fields[0] in ("Z", "X") else fields[19]
