"""Send pacing against a simulated SES endpoint: achieved rate / quota, and throttles.

The endpoint is the fake SES with a fixed maximum send rate (a token bucket holding one
second of recipients) and a fixed latency per call, in real time. Workers are threads, as
many as the plan says, each taking the next batch when free and pacing it with a fresh
Pacer, as a new Lambda invocation would. Messages are really built (render + MIME) and the
ledger is a real SQLite file. The last scenario runs four workers without pacing, to show
what the plan avoids.

Columns: ``rate/quota`` is the whole campaign's accepted messages per second over the
quota, start and tail included (in the last round fewer workers than planned are busy);
``steady`` sums each worker's own rate over its busy span: the campaign's rate while every
worker is busy; ``throttles`` counts calls the endpoint refused for the rate.
"""

from __future__ import annotations

import pathlib
import queue
import threading
import time
import uuid

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.core.pacing import Pacer, plan_send
from mailmatrix.core.send import idempotency_key, send_batch
from mailmatrix.core.templates import load_catalog
from mailmatrix.errors import SendError

CATALOG = load_catalog(
    {
        "subject.txt": "Your letter, {{ Name }}",
        "body.txt": "Dear {{ Name }},\n\nplease find your letter attached.\n",
        "body.html": "<p>Dear {{ Name }},</p><p>please find your letter attached.</p>",
    }
)

# (name, SES max send rate per second, latency per call in seconds, rows, batch size, paced)
SCENARIOS = [
    ("ses-default", 14.0, 0.05, 70, 10, True),
    ("high-rate", 100.0, 0.05, 400, 25, True),
    ("slow-calls", 30.0, 0.25, 150, 10, True),
    ("unpaced-x4", 14.0, 0.05, 70, 10, False),
]


def _items(campaign_id: str, rows: int) -> list[dict]:
    return [
        {
            "row": row,
            "key": idempotency_key(campaign_id, f"p{row}@example.com", "default"),
            "email": f"p{row}@example.com",
            "name": f"Person {row}",
            "template": "default",
            "attachment": None,
            "fields": {"Name": f"Person {row}"},
        }
        for row in range(2, rows + 2)
    ]


class _Recorder:
    """Mailer wrapper that notes which worker thread had each message accepted, and when."""

    def __init__(self, inner: FakeSes) -> None:
        self.inner = inner
        self.by_worker: dict[int, list[float]] = {}

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        message_id = self.inner.send(raw, sender=sender, destinations=destinations)
        self.by_worker.setdefault(threading.get_ident(), []).append(time.monotonic())
        return message_id


def _scenario(out_dir: pathlib.Path, rate, latency, rows, batch_size, paced) -> dict[str, float]:
    """Run one campaign; return achieved rates, throttles and timing."""
    plan = plan_send(
        send_rate=rate,
        valid_rows=rows,
        batch_size=batch_size,
        max_concurrency=40 if paced else 4,
        expected_latency_s=latency,
    )
    workers = plan["max_concurrency"] if paced else 4
    ses = FakeSes({"max_send_rate_per_second": rate, "latency_s": latency}, enforce_rate=True)
    campaign_id = f"c-bench-{uuid.uuid4().hex[:8]}"
    campaign = {
        "id": campaign_id,
        "sender": "Bench <bench@example.com>",
        "max_message_bytes": 10**7,
    }
    ledger = SqliteLedger(str(out_dir / f"{campaign_id}.db"))
    items = _items(campaign_id, rows)
    batches: queue.Queue[list[dict]] = queue.Queue()
    size = plan["batch_size"]
    for start in range(0, rows, size):
        batches.put(items[start : start + size])
    recorder = _Recorder(ses)

    def worker(number: int) -> None:
        while True:
            try:
                batch = batches.get_nowait()
            except queue.Empty:
                return
            pacer = Pacer(plan["per_worker_rate"]) if paced else None
            for attempt in range(10):
                try:
                    send_batch(
                        batch,
                        campaign,
                        catalog=CATALOG,
                        fetch_attachment=lambda name, tag: b"",
                        mailer=recorder,
                        ledger=ledger,
                        attempt=f"w{number}-{batch[0]['row']}",
                        pacer=pacer,
                    )
                    break
                except SendError:
                    time.sleep(0.05 * attempt)  # the state machine's retry, shortened

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    # steady state: the sum of each worker's own rate over its busy span, i.e. the rate
    # while all workers are busy (the campaign's start and tail do not count)
    accepted = [call.at for call in ses.accepted]
    steady = 0.0
    for times in recorder.by_worker.values():
        if len(times) > 1:
            steady += (len(times) - 1) / (times[-1] - times[0])
    return {
        "workers": workers,
        "per_worker_rate": plan["per_worker_rate"],
        "sent": len(accepted),
        "throttles": ses.throttles(),
        "overall": (len(accepted) - 1) / (accepted[-1] - accepted[0]) / rate,
        "steady": steady / rate,
        "elapsed": elapsed,
    }


def run(out_dir: pathlib.Path) -> dict[str, str]:
    """Run every scenario, print a table, return the figures."""
    figures: dict[str, str] = {}
    print(
        f"{'scenario':<12} {'quota/s':>7} {'latency':>7} {'workers':>7} {'rate/quota':>10} "
        f"{'steady':>7} {'throttles':>9} {'sent':>5} {'time':>6}"
    )
    for name, rate, latency, rows, batch_size, paced in SCENARIOS:
        got = _scenario(out_dir, rate, latency, rows, batch_size, paced)
        print(
            f"{name:<12} {rate:>7.0f} {latency * 1000:>5.0f}ms {got['workers']:>7} "
            f"{got['overall']:>10.3f} {got['steady']:>7.3f} {got['throttles']:>9} "
            f"{got['sent']:>5} {got['elapsed']:>5.1f}s"
        )
        figures[f"send_{name}_rate_ratio"] = f"{got['overall']:.3f}"
        figures[f"send_{name}_steady_ratio"] = f"{got['steady']:.3f}"
        figures[f"send_{name}_throttles"] = str(got["throttles"])
    return figures
