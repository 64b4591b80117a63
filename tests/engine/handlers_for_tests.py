"""Handlers importable by name ("module:attr"), for the process-pool invoker test."""

from __future__ import annotations

import os
from typing import Any


def pid_of_worker(event: Any, context: Any) -> dict[str, Any]:
    """Return the process id and the event."""
    return {"pid": os.getpid(), "event": event, "function": context.function_name}
