"""The Listener protocol: how a caller follows an execution while it runs.

``Engine.start(..., listener=obj)`` and ``Engine.redrive(..., listener=obj)`` call, from the
engine's threads, as things happen:

- ``obj.on_event(execution_id, event)`` for each history event of the *parent* execution, in
  order (``event`` is the AWS-shaped dict: ``id``, ``previousEventId``, ``timestamp``, ``type``
  and the ``...EventDetails``). Child workflow events of a Distributed Map are not sent here.
- ``obj.on_map_run(map_run)`` each time a Map Run's counts change (a child started or
  finished, the run started or ended). ``map_run`` holds ``executionId`` (the parent),
  ``mapRunArn``, ``stateName``, ``status`` (RUNNING, SUCCEEDED, FAILED), ``redriveCount`` and the
  counts ``total``, ``succeeded``, ``failed``, ``running``, ``pending``.

- ``obj.on_stopping(execution_id)`` once, when the execution is being stopped (Ctrl-C), before
  the engine waits for the Map children in flight: a caller that can ask them to stop sooner
  (MailMatrix records a halt its batches look for between rows) does it there. When the
  engine itself stops a Map Run, because its records cannot be written (a full disk, a file
  size limit), it calls ``obj.on_stopping(execution_id, reason)``, ``reason`` saying so.

A listener may implement any of the methods; calls are made under a lock, so an
implementation does not need its own, but it must return quickly (it runs on the hot path).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class Listener(Protocol):
    """Receives parent history events and Map Run counts while an execution runs."""

    def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
        """Called with each history event of the parent execution."""

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        """Called when a Map Run's counts change."""


class Notifier:
    """Calls a listener's optional methods one at a time; swallows nothing."""

    def __init__(self, execution_id: str, listener: Any | None) -> None:
        self.execution_id = execution_id
        self._on_event = getattr(listener, "on_event", None)
        self._on_map_run = getattr(listener, "on_map_run", None)
        self._on_stopping = getattr(listener, "on_stopping", None)
        self._lock = threading.Lock()

    def event(self, event: dict[str, Any]) -> None:
        """Forward one parent history event."""
        if self._on_event:
            with self._lock:
                self._on_event(self.execution_id, event)

    def map_run(self, snapshot: dict[str, Any]) -> None:
        """Forward a Map Run's counts."""
        if self._on_map_run:
            with self._lock:
                self._on_map_run(dict(snapshot, executionId=self.execution_id))

    def stopping(self, reason: str | None = None) -> None:
        """Say that the execution is being stopped (``reason``: why the engine stops it; None:
        a stop asked for)."""
        if self._on_stopping:
            with self._lock:
                if reason is None:
                    self._on_stopping(self.execution_id)
                else:
                    self._on_stopping(self.execution_id, reason)
