"""A stop asked for by a signal, kept where the engine can see it.

A signal handler stops a local run by raising KeyboardInterrupt in the main thread. Python
drops an exception raised while the main thread runs certain code: a fork's handlers (the
engine holds the stop signals back while it forks its workers, see ProcessInvoker.start), a
``__del__``, a weakref callback. The handler also
calls ``request()``, and the engine looks at ``requested()`` between states and while a Map
waits for its children, so a stop whose KeyboardInterrupt was lost still aborts the
execution, at the next of those points.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


def request() -> None:
    """Ask the running execution to stop (from a signal handler)."""
    _requested.set()


def requested() -> bool:
    """Whether a stop was asked for since the last ``clear()``."""
    return _requested.is_set()


def clear() -> None:
    """Forget an earlier stop (before a command starts an execution of its own)."""
    _requested.clear()


def check() -> None:
    """Raise KeyboardInterrupt, as the signal did, when a stop was asked for."""
    if _requested.is_set():
        raise KeyboardInterrupt
