"""Local notifications: appended as JSON Lines to a file, and echoed to a console callback."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mailmatrix.ports import Notification


class LocalNotifier:
    """The Notifier port for one machine: a JSONL file plus an optional console echo."""

    def __init__(self, path: str | Path, echo: Callable[[str, Notification], None] | None = None):
        self.path = Path(path)
        self.echo = echo
        self._lock = threading.Lock()

    def publish(self, topic: str, notification: Notification) -> str:
        """Append the notification to the file and echo it; return its id."""
        message_id = str(uuid.uuid4())
        record = {
            "id": message_id,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "topic": topic,
            "subject": notification.subject,
            "message": notification.message,
            "attributes": notification.attributes,
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.echo is not None:
            self.echo(topic, notification)
        return message_id
