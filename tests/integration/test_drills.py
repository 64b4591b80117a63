"""Drills: a 2,000-row campaign through faults, retried and redriven until it is settled.

The Distributed Map is simulated here the way Step Functions runs it: children (one per batch
of 25) run four at a time; each child's SendBatch task is retried on the errors the ASL's
Retry lists, with full-jitter backoff, up to its MaxAttempts; children that still fail are
redriven (same child id) until none is left. The mailer is the drill mailer in front of the
fake SES, the ledger is SQLite, and the clock moves only when something sleeps.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.adapters.mailer_faults import FaultyMailer, SimulatedCrash
from mailmatrix.core.send import RetryPolicy, idempotency_key, send_batch
from mailmatrix.core.templates import load_catalog

ASL = Path(__file__).resolve().parents[2] / "statemachine" / "mailmatrix.asl.json"
CID = "c-drill"
ROWS = 2000
BATCH = 25
MAX_CONCURRENCY = 4
MAX_REDRIVES = 5


class Clock:
    """Simulated time shared by the children: sleeping advances it, nobody waits."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


def send_batch_retriers() -> list[dict]:
    """The SendBatch task's Retry list from the real definition."""
    definition = json.loads(ASL.read_text(encoding="utf-8"))
    task = definition["States"]["SendEmails"]["ItemProcessor"]["States"]["SendBatch"]
    return task["Retry"]


def retrier_for(retriers: list[dict], error: str) -> int | None:
    """Index of the first retrier that matches ``error`` (as Step Functions picks it)."""
    for index, retrier in enumerate(retriers):
        if error in retrier["ErrorEquals"] or "States.ALL" in retrier["ErrorEquals"]:
            return index
    return None


def manifest() -> list[dict]:
    items = []
    for row in range(2, ROWS + 2):
        email = f"person{row:04d}@example.com"
        items.append(
            {
                "row": row,
                "key": idempotency_key(CID, email, "default"),
                "email": email,
                "name": f"Person {row}",
                "template": "default",
                "attachment": None,
                "fields": {"Email": email, "Name": f"Person {row}"},
                "cc": [],
                "bcc": [],
                "reply_to": None,
            }
        )
    return items


@pytest.fixture
def open_drill(tmp_path):
    """Set up drills in this test's folder; their ledgers are closed when it ends."""
    drills: list[Drill] = []

    def open_one(
        spec: str, seed: int, crash_as: str | None = None, policy: RetryPolicy | None = None
    ) -> Drill:
        drills.append(Drill(tmp_path, spec, seed, crash_as, policy))
        return drills[-1]

    yield open_one
    for drill in drills:
        drill.ledger.close()


class Drill:
    """One campaign run under faults, with the state machine's retries and redrives."""

    def __init__(
        self,
        tmp_path: Path,
        spec: str,
        seed: int,
        crash_as: str | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.crash_as = crash_as
        self.policy = policy
        self.clock = Clock()
        self.ses = FakeSes()
        self.mailer = FaultyMailer.from_spec(spec, self.ses, seed=seed)
        self.ledger = SqliteLedger(str(tmp_path / "ledger.db"), clock=self.clock)
        self.catalog = load_catalog(
            {"subject.txt": "Hello {{ Name }}", "body.txt": "Dear {{ Name }},\n\nhello.\n"}
        )
        self.campaign = {
            "id": CID,
            "sender": "Drill <drill@example.com>",
            "max_message_bytes": 41943040,
        }
        self.retriers = send_batch_retriers()
        self.rng = random.Random(seed)
        self.task_errors: Counter[str] = Counter()
        self.results: dict[str, dict] = {}

    def child(self, owner: str, items: list[dict]) -> bool:
        """Run one child execution: SendBatch with the ASL's Retry. True when it succeeded."""
        retries: Counter[int] = Counter()
        for attempt in range(10_000):
            try:
                result = send_batch(
                    items,
                    self.campaign,
                    catalog=self.catalog,
                    fetch_attachment=lambda name, tag: b"",
                    mailer=self.mailer,
                    ledger=self.ledger,
                    attempt=owner,
                    sleep=self.clock.sleep,
                    clock=self.clock,
                    rng=random.Random(f"{owner}/{attempt}"),
                    policy=self.policy,
                )
            except Exception as error:
                name = getattr(error, "asl_error", type(error).__name__)
                if isinstance(error, SimulatedCrash) and self.crash_as:
                    name = self.crash_as
                self.task_errors[name] += 1
                index = retrier_for(self.retriers, name)
                if index is None or retries[index] >= self.retriers[index].get("MaxAttempts", 3):
                    return False
                retrier = self.retriers[index]
                interval = retrier.get("IntervalSeconds", 1)
                delay = interval * retrier.get("BackoffRate", 2.0) ** retries[index]
                delay = min(delay, retrier.get("MaxDelaySeconds", delay))
                retries[index] += 1
                self.clock.sleep(self.rng.uniform(0, delay))
                continue
            self.results[owner] = result.to_dict()
            return True
        raise AssertionError(f"{owner}: retried forever")

    def run(self) -> int:
        """Run the Map, then redrive failed children until none is left; return redrives."""
        items = manifest()
        children = {
            f"child-{n:03d}": items[start : start + BATCH]
            for n, start in enumerate(range(0, len(items), BATCH))
        }
        pending = list(children)
        for redrive in range(MAX_REDRIVES + 1):
            with ThreadPoolExecutor(max_workers=MAX_CONCURRENCY) as pool:
                outcomes = pool.map(lambda o: self.child(o, children[o]), pending)
                ok = dict(zip(pending, outcomes, strict=True))
            pending = [owner for owner, succeeded in ok.items() if not succeeded]
            if not pending:
                return redrive
        raise AssertionError(f"still failing after {MAX_REDRIVES} redrives: {pending}")

    def final_statuses(self) -> Counter[str]:
        return Counter(row["status"] for result in self.results.values() for row in result["rows"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("crash_as", "redrives"),
    [("Sandbox.Timedout", 0), ("SimulatedCrash", 1)],
    ids=["crash-retried-like-a-lambda-timeout", "crash-fails-the-child-then-redrive"],
)
def test_drill_throttling_transient_faults_and_one_crash(open_drill, crash_as, redrives):
    # GIVEN 20% throttling, 5% transient failures and a crash after the 700th accepted message
    spec = "throttle=0.2,transient=0.05,crash-after=700"
    drill = open_drill(spec, seed=7, crash_as=crash_as)

    # WHEN the campaign runs, with retries and redrives until settled
    assert drill.run() == redrives

    # THEN the faults really happened
    assert drill.mailer.crashed
    assert drill.mailer.injected["throttle"] > 0.15 * len(drill.ses.calls)
    assert drill.mailer.injected["transient"] > 0.03 * len(drill.ses.calls)
    assert drill.task_errors[crash_as] == 1

    # AND every recipient got exactly one message, bar the crash window, measured exactly:
    # the 700th accepted message was sent again by the retry that took its claim over
    crashed = drill.ses.accepted[699].destinations[0]
    deliveries = drill.ses.deliveries()
    assert len(deliveries) == ROWS
    assert deliveries[crashed] == 2
    assert Counter(deliveries.values()) == {1: ROWS - 1, 2: 1}

    # AND the ledger and the children's results say the same
    outcomes = drill.ledger.outcomes(CID)
    assert Counter(o.state for o in outcomes) == {"sent": ROWS}
    assert [(o.row, o.takeovers) for o in outcomes if o.takeovers] == [(int(crashed[6:10]), 1)]
    assert drill.final_statuses() == {"sent": ROWS}
    recorded = {o.message_id for o in outcomes}
    assert recorded <= {call.message_id for call in drill.ses.accepted}


@pytest.mark.slow
def test_drill_every_fault_kind_duplicates_only_in_the_measured_window(open_drill):
    # GIVEN every fault kind at once, timeouts included (sent, then the reply is lost)
    spec = "throttle=0.2,transient=0.05,permanent=0.01,timeout=0.01,crash-after=1200"
    drill = open_drill(spec, seed=11)

    drill.run()

    # THEN every row is settled: sent, or failed for good and never retried, each permanent
    # rejection failing its row (as rejected; or in doubt, OutcomeUnknown, when a try of the
    # row before it went unanswered); and rows in doubt are those with a lost reply alone
    # (which rows those are depends on how the four children's threads interleave)
    permanent = drill.mailer.injected["permanent"]
    assert permanent > 0
    statuses = drill.final_statuses()
    assert statuses["sent"] + statuses["failed"] == ROWS
    assert Counter(o.state for o in drill.ledger.outcomes(CID)) == statuses
    codes = Counter(
        row["code"]
        for result in drill.results.values()
        for row in result["rows"]
        if row["status"] == "failed"
    )
    unknown = codes.pop("OutcomeUnknown", 0)
    assert set(codes) == {"DrillRejected"}
    assert codes["DrillRejected"] <= permanent <= codes["DrillRejected"] + unknown

    # AND the extra messages are exactly the lost replies plus the crash: nothing else
    timeouts = drill.mailer.injected["timeout"]
    assert timeouts > 0
    deliveries = drill.ses.deliveries()
    assert sum(deliveries.values()) == statuses["sent"] + timeouts + 1
    assert len(deliveries) == statuses["sent"] + unknown


@pytest.mark.slow
def test_drill_every_recipient_who_may_have_two_messages_is_reported(open_drill):
    # GIVEN lost replies (the service accepted the message, the answer never came) on 30% of
    # calls and a crash: rows are sent again by in-batch retries, batch retries and takeovers,
    # and many batches end up retried, so their rows come back as "sent earlier"
    # (the halt at rows in a row left without an answer is off: at 30% of lost replies it
    # stops the campaign every few dozen rows, as it should, and every row is to be settled
    # here; test_send and test_smtp_campaign check it)
    never = RetryPolicy(unknown_rows=ROWS + 1)
    drill = open_drill(
        "timeout=0.3,crash-after=900", seed=5, crash_as="Sandbox.Timedout", policy=never
    )
    drill.run()
    deliveries = drill.ses.deliveries()
    twice = {address for address, count in deliveries.items() if count > 1}
    assert len(twice) > 100  # the faults really made duplicates

    # THEN each of them is flagged in the children's final results (sent with a takeover note,
    # or failed as OutcomeUnknown: tried twice without an answer) and doubtful in the ledger
    flagged = {
        f"person{row['row']:04d}@example.com"
        for result in drill.results.values()
        for row in result["rows"]
        if row.get("takeover") or row.get("code") == "OutcomeUnknown"
    }
    assert twice <= flagged
    doubtful = {f"person{o.row:04d}@example.com" for o in drill.ledger.outcomes(CID) if o.doubtful}
    assert twice <= doubtful
    # AND nobody is flagged whose every try was answered
    assert flagged <= doubtful
