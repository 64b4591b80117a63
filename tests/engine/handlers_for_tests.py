"""Handlers importable by name ("module:attr"), for the process-pool invoker test."""

from __future__ import annotations

import os
import signal
from typing import Any


def pid_of_worker(event: Any, context: Any) -> dict[str, Any]:
    """Return the process id and the event."""
    return {"pid": os.getpid(), "event": event, "function": context.function_name}


def die_once(event: Any, context: Any) -> dict[str, Any]:
    """Kill this worker process the first time (the marker file does not exist yet), the
    way the kernel ends a process out of memory; answer the next times."""
    marker = event["marker"]
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": os.getpid()}
