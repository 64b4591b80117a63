"""A mailer that fails on purpose, for drills: ``--faults throttle=0.2,transient=0.05,...``.

``FaultyMailer`` wraps a real mailer. For each call it draws one seeded random number and
either lets the call through or injects one fault:

- ``throttle=P``: Throttled, the message never reaches the inner mailer;
- ``transient=P``: TransientSendError, never reaches it;
- ``permanent=P``: PermanentSendError (code ``DrillRejected``), never reaches it;
- ``timeout=P``: the inner mailer accepts the message, then the reply is "lost" and the
  caller sees TransientSendError (code ``DrillTimeout``). This is the worst kind of timeout:
  a retry sends the message again, so each one is a duplicate the ledger cannot prevent;
- ``quota-after=N``: after N accepted messages every call fails as the daily quota used up
  (AccountSendingHalted, code ``DrillQuota``: its halt is the drill's, which a run without the
  drill lifts);
- ``crash-after=N``: once, right after the inner mailer accepted its N-th message, raise
  SimulatedCrash, which nothing in send_batch catches: the attempt ends abruptly with the
  message sent but not recorded, like a Lambda timeout at the worst moment.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

from mailmatrix.core.failures import DRILL_QUOTA, DRILL_QUOTA_CODE
from mailmatrix.errors import (
    AccountSendingHalted,
    ConfigurationError,
    PermanentSendError,
    Throttled,
    TransientSendError,
)
from mailmatrix.ports import Mailer

RATES = ("throttle", "transient", "permanent", "timeout")
COUNTS = ("crash-after", "quota-after", "seed")


class SimulatedCrash(Exception):
    """The drill's abrupt end of an attempt, after the service accepted a message.

    Deliberately not a MailMatrixError, so no layer mistakes it for a send outcome. The
    state machine should treat it like the Lambda timeout it stands for (``asl_error``).
    """

    asl_error = "Sandbox.Timedout"


def parse_spec(spec: str) -> dict[str, float]:
    """Parse ``throttle=0.2,transient=0.05,crash-after=500`` into a dict of numbers."""
    known = (*RATES, *COUNTS)
    parsed: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ConfigurationError(
                f"faults: {part!r}: expected NAME=VALUE with NAME one of {', '.join(known)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise ConfigurationError(f"faults: {name}: not a number: {value!r}") from None
        if name in COUNTS:
            if number < (0 if name == "seed" else 1) or number != int(number):
                raise ConfigurationError(f"faults: {name}: must be a whole number >= 1: {value}")
        elif not 0 <= number <= 1:
            raise ConfigurationError(f"faults: {name}: a rate must be 0..1: {value}")
        parsed[name] = number
    if sum(parsed.get(name, 0.0) for name in RATES) > 1:
        raise ConfigurationError(f"faults: {spec!r}: the rates add up to more than 1")
    return parsed


class FaultyMailer:
    """Mailer port that injects faults in front of (or after) a real mailer."""

    def __init__(
        self,
        inner: Mailer,
        *,
        throttle: float = 0.0,
        transient: float = 0.0,
        permanent: float = 0.0,
        timeout: float = 0.0,
        crash_after: int | None = None,
        quota_after: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.inner = inner
        self.rates = {
            "throttle": throttle,
            "transient": transient,
            "permanent": permanent,
            "timeout": timeout,
        }
        self.crash_after = crash_after
        self.quota_after = quota_after
        self.accepted = 0
        self.crashed = False
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: str, inner: Mailer, *, seed: int | None = None) -> FaultyMailer:
        """Build from a drill spec such as ``throttle=0.2,transient=0.05,crash-after=500``."""
        parsed = parse_spec(spec)
        crash = parsed.pop("crash-after", None)
        quota = parsed.pop("quota-after", None)
        if "seed" in parsed:
            seed = int(parsed.pop("seed"))
        return cls(
            inner,
            **parsed,
            crash_after=None if crash is None else int(crash),
            quota_after=None if quota is None else int(quota),
            seed=seed,
        )

    def _draw(self) -> str | None:
        with self._lock:
            point = self._rng.random()
        for name in RATES:
            if point < self.rates[name]:
                return name
            point -= self.rates[name]
        return None

    def close(self) -> None:
        """Close the mailer the drill wraps."""
        self.inner.close()

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Pass the message on, or fail as the drill says."""
        with self._lock:
            exhausted = self.quota_after is not None and self.accepted >= self.quota_after
        if exhausted:
            raise AccountSendingHalted(
                f"{DRILL_QUOTA}{self.quota_after}: Daily message quota exceeded.",
                details={"code": DRILL_QUOTA_CODE},
            )
        fault = self._draw()
        if fault is not None:
            self.injected[fault] += 1
        if fault == "throttle":
            raise Throttled("faults: throttle drill: Maximum sending rate exceeded")
        if fault == "transient":
            raise TransientSendError("faults: transient drill: service unavailable", refused=True)
        if fault == "permanent":
            raise PermanentSendError(
                "faults: permanent drill: message rejected", details={"code": "DrillRejected"}
            )

        message_id = self.inner.send(raw, sender=sender, destinations=destinations, key=key)
        with self._lock:
            self.accepted += 1
            crash = not self.crashed and self.accepted == self.crash_after
            self.crashed = self.crashed or crash
        if crash:
            raise SimulatedCrash(
                f"faults: crash-after={self.crash_after}: attempt ended after message"
                f" {message_id} was accepted"
            )
        if fault == "timeout":
            raise TransientSendError(
                f"faults: timeout drill: no reply (the service accepted {message_id})",
                details={"code": "DrillTimeout"},
            )
        return message_id
