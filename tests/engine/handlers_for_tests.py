"""Handlers importable by name ("module:attr"), for the process-pool invoker test."""

from __future__ import annotations

import os
import signal
import time
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


def sleep_and_tell(event: Any, context: Any) -> dict[str, Any]:
    """Write this worker's pid to ``event["pidfile"]``, then sleep for a minute."""
    with open(event["pidfile"], "w") as out:
        out.write(str(os.getpid()))
    time.sleep(60)
    return {}


def hang_once(event: Any, context: Any) -> Any:
    """The first time (no ``event["marker"]`` file yet) create it and hang; then echo."""
    marker = event["marker"]
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        time.sleep(60)
    return event


def start_then_finish(event: Any, context: Any) -> dict[str, Any]:
    """Create ``event["started"]``, wait ``event["seconds"]``, then create ``event["done"]``."""
    with open(event["started"], "w"):
        pass
    time.sleep(event["seconds"])
    with open(event["done"], "w"):
        pass
    return {}
