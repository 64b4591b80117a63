"""A scripted stand-in for SES SendEmail, for tests, drills and the send benchmark.

It speaks the Mailer port and fails the way SES does, by error code and message (classified
by ``mailmatrix.core.send.classify_service_error``, as the SES adapter does). A script is a
dict, the same shape as the JSON files of the sending cases:

- ``failures``: ``[{"call": 3, "error": {"Code", "Message", "HTTPStatusCode"}}]``, calls
  numbered from 1 in the order they arrive;
- ``by_destination``: ``{"bob@example.com": error}``; ``all_destinations``: one error for
  every call (``<destination>`` in its Message is replaced by the address);
- ``fail_all_after_successes`` with ``error_after_quota``: the daily quota;
- ``max_send_rate_per_second`` with ``enforce_rate=True``: a token bucket holding one
  second's worth of recipients, refilled continuously. SES counts recipients: a call is
  accepted while at least one token is left and takes one per destination (the bucket may
  go below zero); a call finding less than one is throttled ("Maximum sending rate
  exceeded.");
- ``latency_s``: time each call takes (slept through the injected ``sleep``).

Every call is kept in ``calls``; every accepted message in ``accepted``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mailmatrix.core.send import classify_service_error

RATE_EXCEEDED = {
    "Code": "Throttling",
    "Message": "Maximum sending rate exceeded.",
    "HTTPStatusCode": 400,
}


@dataclass(frozen=True)
class Call:
    """One SendEmail call as the fake service saw it."""

    number: int
    at: float
    sender: str
    destinations: tuple[str, ...]
    message_id: str | None
    error: str | None
    raw: bytes = b""


class FakeSes:
    """Mailer port backed by a script instead of SES."""

    def __init__(
        self,
        script: Mapping[str, Any] | None = None,
        *,
        enforce_rate: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        keep_raw: bool = False,
    ) -> None:
        self.script = dict(script or {})
        self.enforce_rate = enforce_rate
        self.clock = clock
        self.sleep = sleep
        self.keep_raw = keep_raw
        self.calls: list[Call] = []
        self.successes = 0
        self._lock = threading.Lock()
        self._by_call = {int(f["call"]): f["error"] for f in self.script.get("failures", [])}
        self._rate = float(self.script.get("max_send_rate_per_second") or 0)
        self._tokens = self._rate
        self._refilled_at: float | None = None

    @property
    def accepted(self) -> list[Call]:
        """The calls that returned a message id."""
        return [call for call in self.calls if call.message_id is not None]

    def deliveries(self) -> Counter[str]:
        """How many accepted messages each destination got."""
        return Counter(d for call in self.accepted for d in call.destinations)

    def throttles(self) -> int:
        """How many calls were refused for the send rate."""
        return sum(1 for call in self.calls if call.error == "Throttled")

    def _rate_error(self, now: float, recipients: int) -> Mapping[str, Any] | None:
        if not (self.enforce_rate and self._rate > 0):
            return None
        if self._refilled_at is not None:
            elapsed = now - self._refilled_at
            self._tokens = min(self._rate, self._tokens + elapsed * self._rate)
        self._refilled_at = now
        if self._tokens < 1.0:
            return RATE_EXCEEDED
        self._tokens -= recipients
        return None

    def _scripted_error(self, number: int, destinations: list[str]) -> Mapping[str, Any] | None:
        if number in self._by_call:
            return self._by_call[number]
        quota = self.script.get("fail_all_after_successes")
        if quota is not None and self.successes >= int(quota):
            return self.script["error_after_quota"]
        for destination in destinations:
            if destination in self.script.get("by_destination", {}):
                return self.script["by_destination"][destination]
        if "all_destinations" in self.script:
            error = dict(self.script["all_destinations"])
            error["Message"] = error["Message"].replace("<destination>", destinations[0])
            return error
        return None

    def close(self) -> None:
        """Nothing to release: the script holds no connection."""

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Accept or refuse the message as the script says; return a message id."""
        with self._lock:
            number = len(self.calls) + 1
            now = self.clock()
            error = self._rate_error(now, len(destinations)) or self._scripted_error(
                number, destinations
            )
            message_id = None
            kind = None
            if error is None:
                self.successes += 1
                message_id = f"fake-ses-{number:07d}"
            else:
                kind = type(self._exception(error)).__name__
            self.calls.append(
                Call(
                    number=number,
                    at=now,
                    sender=sender,
                    destinations=tuple(destinations),
                    message_id=message_id,
                    error=kind,
                    raw=raw if self.keep_raw else b"",
                )
            )
        latency = float(self.script.get("latency_s") or 0)
        if latency > 0:
            self.sleep(latency)
        if error is not None:
            raise self._exception(error)
        assert message_id is not None
        return message_id

    @staticmethod
    def _exception(error: Mapping[str, Any]) -> Exception:
        return classify_service_error(
            str(error["Code"]),
            str(error.get("Message", "")),
            status=error.get("HTTPStatusCode"),
            where="fake-ses",
        )
