"""Send-rate pacing: one campaign stays under the account's send rate across all its workers.

On AWS the workers are separate Lambda invocations (the Distributed Map's children) and
share no memory, so the rate is split up front: ``plan_send`` picks how many children run
at once (MaxConcurrency) and each child paces itself with a ``Pacer`` at
``send_rate * SAFETY / max_concurrency``. The sum can never exceed the campaign's rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

# Share of the account's rate the plan spends: a margin for clocks and for SES's own
# measurement; the pacing itself never exceeds its share (see docs/sending.md).
SAFETY = 0.98

# A worker whose sends keep it busy more than this share of the time cannot keep pace with
# jitter in latency; the plan adds workers until each is at most this busy.
UTILISATION = 0.8

# Per-send time assumed when nothing was measured: SES v2 SendEmail from Lambda in the same
# Region, plus the two ledger writes.
DEFAULT_LATENCY_S = 0.1

# Balanced batches never go below this many rows: each child costs a Lambda invocation and
# a few state transitions, which tiny batches would multiply.
MIN_BATCH_SIZE = 10

# How long a batch may spend pacing its rows: it paces them within one SendBatch invocation
# and waits out its interval at the end (Pacer.finish), so the function's timeout (900 s,
# infra/template.yaml) less the 90 s a batch keeps at its end on AWS (RetryPolicy.reserve_s:
# adapters/_aws.ROW_RESERVE_S) and a margin for the sends themselves.
BATCH_TIME_S = 800.0

# The slowest campaign rate that can be paced, in messages a second: one a minute. Each batch
# is a fresh pacer whose first row goes at once, kept in step with the batch before it only
# by that batch's last wait; at this rate a batch of MIN_BATCH_SIZE rows waits out its
# intervals in about ten minutes, within BATCH_TIME_S. A slower one could not keep its pace.
MIN_SEND_RATE = 1 / 60


def plan_send(
    *,
    send_rate: float | None,
    valid_rows: int,
    batch_size: int,
    max_concurrency: int,
    expected_latency_s: float = DEFAULT_LATENCY_S,
    tolerated_failure_percentage: int = 0,
) -> dict[str, Any]:
    """Derive the Map's MaxConcurrency and each worker's rate from the campaign's send rate.

    With a rate, the batch size may shrink below ``batch_size`` so the batches share out
    evenly over the workers: otherwise the last round runs with few workers busy and the
    campaign as a whole falls well short of the rate.
    """
    if not send_rate or send_rate <= 0:
        batches = math.ceil(valid_rows / batch_size) if valid_rows > 0 else 0
        return _plan(
            batch_size,
            max(1, min(max_concurrency, batches)),
            0.0,
            0.0,
            tolerated_failure_percentage,
        )

    budget = send_rate * SAFETY
    needed = max(1, math.ceil(budget * max(expected_latency_s, 0.0) / UTILISATION))
    workers = max(1, min(needed, max_concurrency, valid_rows))
    # No more rows a batch than it can pace within one invocation (a slow rate).
    paced = max(MIN_BATCH_SIZE, math.floor(BATCH_TIME_S * budget / workers))
    batch_size = balanced_batch_size(valid_rows, min(batch_size, paced), workers)
    batches = math.ceil(valid_rows / batch_size) if valid_rows > 0 else 0
    workers = max(1, min(workers, batches))
    per_worker_rate = budget / workers
    per_worker_capacity = math.inf if expected_latency_s <= 0 else 1 / expected_latency_s
    expected_rate = workers * min(per_worker_rate, per_worker_capacity)
    return _plan(batch_size, workers, per_worker_rate, expected_rate, tolerated_failure_percentage)


def balanced_batch_size(rows: int, limit: int, workers: int) -> int:
    """The batch size at most ``limit`` that gives every worker the same number of rounds."""
    if rows <= 0:
        return limit
    rounds = math.ceil(rows / (workers * limit))
    even = math.ceil(rows / (workers * rounds))
    return max(min(limit, MIN_BATCH_SIZE), even)


def _plan(
    batch_size: int, workers: int, per_worker_rate: float, expected_rate: float, tolerated: int
) -> dict[str, Any]:
    return {
        "batch_size": batch_size,
        "max_concurrency": workers,
        "tolerated_failure_percentage": tolerated,
        "dry_run": False,
        "per_worker_rate": round(per_worker_rate, 6),
        "expected_rate": round(expected_rate, 3),
    }


class Pacer:
    """A token bucket of depth one for a single worker: at most ``rate`` sends per second.

    ``acquire()`` blocks (through the injected ``sleep``) until the next send may start.
    Slots are scheduled from the previous slot, not from the end of the previous send, so
    the send's own latency does not slow the worker down while it stays below the interval.
    A fresh pacer lets its first send go at once; ``finish()`` at the end of a batch waits
    out the current interval, so the next batch of the same Map slot (a new invocation with
    a fresh pacer) cannot send early. Thread-safe, though each worker owns its pacer.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"Pacer: rate must be positive, got {rate}")
        self.rate = rate
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_campaign(
        cls,
        campaign: Mapping[str, Any],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Pacer | None:
        """Build the worker's pacer from ``campaign["per_worker_rate"]``; None when unpaced."""
        rate = campaign.get("per_worker_rate")
        if rate is None and campaign.get("send_rate"):
            rate = campaign["send_rate"] * SAFETY / max(1, int(campaign.get("max_concurrency", 1)))
        if not rate or rate <= 0:
            return None
        return cls(float(rate), clock=clock, sleep=sleep)

    def acquire(self, recipients: int = 1, *, wait: Callable[[float], None] | None = None) -> float:
        """Wait for the next slot; return how long this call waited, in seconds.

        SES counts recipients, not messages, against the rate: a message to three
        recipients goes now and holds the worker's next slot back by three intervals.
        ``wait`` sleeps instead of the pacer's ``sleep``: a batch's, which raises to end a
        long wait when the batch must stop (send_batch).
        """
        with self._lock:
            now = self._clock()
            slot = now if self._next is None else max(now, self._next)
            self._next = slot + self.interval * max(1, recipients)
        waited = slot - now
        if waited > 0:
            (wait or self._sleep)(waited)
        return waited

    def finish(self, *, wait: Callable[[float], None] | None = None) -> float:
        """Wait until the next slot would open (with ``wait``, as acquire does); return how
        long this call waited."""
        with self._lock:
            waited = 0.0 if self._next is None else max(0.0, self._next - self._clock())
        if waited > 0:
            (wait or self._sleep)(waited)
        return waited
