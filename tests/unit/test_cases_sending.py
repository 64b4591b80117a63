"""The sending cases (tests/fixtures/sending, copied from the shared cases 18, 19, 20, 21).

Each case runs through send_batch with the scripted fake SES, the SQLite ledger and a clock
that only moves when something sleeps.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from contextlib import closing

import pytest

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.adapters.mailer_faults import FaultyMailer, SimulatedCrash
from mailmatrix.core.addresses import mask
from mailmatrix.core.pacing import Pacer, plan_send
from mailmatrix.core.send import RetryPolicy, compose, send_batch
from mailmatrix.errors import (
    AccountSendingHalted,
    ClaimBusy,
    PermanentSendError,
    TransientSendError,
)
from tests.fixtures.sending import kit

RATE_CASE = "18-ses-throttling-and-daily-quota"
REJECT_CASE = "19-one-recipient-rejected-by-ses"
RETRY_CASE = "20-retry-must-not-double-send"
SIZE_CASE = "21-message-size-limit"
MIB = 1024 * 1024


@pytest.fixture
def clock() -> kit.FakeClock:
    return kit.FakeClock()


@pytest.fixture
def ledger(tmp_path, clock) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(str(tmp_path / "ledger.db"), clock=clock)) as kept:
        yield kept


def run(items, mailer, ledger, clock, *, attempt="child-1", campaign=None, **kwargs):
    return send_batch(
        items,
        campaign or kit.campaign(),
        catalog=kit.catalog(),
        fetch_attachment=kwargs.pop("fetch", kit.fetcher()),
        mailer=mailer,
        ledger=ledger,
        attempt=attempt,
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(18),
        **kwargs,
    )


# Case 18: rate throttling is retried; the daily quota stops the campaign.


def test_case18_rate_throttling_is_retried_until_every_row_is_sent(ledger, clock):
    # GIVEN the fake SES throttles calls 3, 4, 5 and 11
    items = kit.manifest(RATE_CASE)
    ses = FakeSes(kit.script(RATE_CASE, "ses_script_rate.json"), clock=clock)

    # WHEN the batch runs
    result = run(items, ses, ledger, clock)

    # THEN all 20 are sent, each exactly once, in 24 calls; the 4 throttles were retried
    assert result.to_dict()["sent"] == 20
    assert [row["status"] for row in result.rows] == ["sent"] * 20
    assert len(ses.calls) == 24
    assert [c.number for c in ses.calls if c.error] == [3, 4, 5, 11]
    assert set(ses.deliveries().values()) == {1}
    assert len(ses.deliveries()) == 20
    # with backoff and full jitter, bounded: 3 growing waits for row 4, then one for row 11
    policy = RetryPolicy()
    assert len(clock.slept) == 4
    for slept, bound in zip(clock.slept, (0.2, 0.4, 0.8, 0.2), strict=True):
        assert 0 <= slept <= min(policy.cap_s, bound)


def test_case18_rate_stays_under_the_quota_across_concurrent_workers(ledger, clock):
    # GIVEN the case's rate of 2 per second and a plan for 20 rows in batches of 5
    plan = plan_send(
        send_rate=2, valid_rows=20, batch_size=5, max_concurrency=40, expected_latency_s=0.1
    )
    assert plan["max_concurrency"] * plan["per_worker_rate"] <= 2

    # WHEN one worker sends its batch paced at the plan's per-worker rate
    items = kit.manifest(RATE_CASE)[:5]
    ses = FakeSes({"max_send_rate_per_second": 2}, enforce_rate=True, clock=clock)
    pacer = Pacer(plan["per_worker_rate"], clock=clock, sleep=clock.sleep)
    result = run(items, ses, ledger, clock, pacer=pacer)

    # THEN the SES-side token bucket never throttled and the calls are spaced at the rate
    assert result.sent == 5
    assert ses.throttles() == 0
    gaps = [b.at - a.at for a, b in zip(ses.calls, ses.calls[1:], strict=False)]
    assert min(gaps) >= 1 / plan["per_worker_rate"] - 1e-9


def test_case18_daily_quota_halts_the_campaign_and_defers_the_rest(ledger, clock):
    # GIVEN a quota of 12 messages and three batches of one campaign
    items = kit.manifest(RATE_CASE)
    batches = [items[0:7], items[7:14], items[14:20]]
    ses = FakeSes(kit.script(RATE_CASE, "ses_script_daily_quota.json"), clock=clock)

    # WHEN the batches run one after the other
    first = run(batches[0], ses, ledger, clock, attempt="child-1")
    with pytest.raises(AccountSendingHalted) as stopped:
        run(batches[1], ses, ledger, clock, attempt="child-2")
    with pytest.raises(AccountSendingHalted) as sibling:
        run(batches[2], ses, ledger, clock, attempt="child-3")

    # THEN 12 are sent, the 13th call hit the quota, nothing was retried fast
    assert first.sent == 7
    assert stopped.value.details["result"]["sent"] == 5
    assert stopped.value.details["deferred"] == [14, 15]
    assert "Daily message quota exceeded" in stopped.value.message
    assert len(ses.calls) == 13
    # the sibling batch stopped before calling SES, because the campaign is halted
    assert sibling.value.details["deferred"] == [16, 17, 18, 19, 20, 21]
    assert ledger.halted("c-sending-test").code == "Throttling"
    states = Counter(o.state for o in ledger.outcomes("c-sending-test"))
    assert states == {"sent": 12, "released": 1}


def test_case18_resuming_after_the_quota_window_sends_only_the_deferred_rows(ledger, clock):
    # GIVEN a campaign halted by the daily quota after 12 sends
    items = kit.manifest(RATE_CASE)
    batches = [items[0:10], items[10:20]]
    quota = FakeSes(kit.script(RATE_CASE, "ses_script_daily_quota.json"), clock=clock)
    run(batches[0], quota, ledger, clock, attempt="child-1")
    with pytest.raises(AccountSendingHalted):
        run(batches[1], quota, ledger, clock, attempt="child-2")

    # WHEN a redrive comes right away, it still stops without calling SES
    later = FakeSes({}, clock=clock)
    with pytest.raises(AccountSendingHalted):
        run(batches[1], later, ledger, clock, attempt="child-2")
    assert later.calls == []

    # WHEN the operator redrives after the halt's hold (the quota window moved on)
    clock.sleep(RetryPolicy().halt_hold_s + 1)
    results = [run(b, later, ledger, clock, attempt=f"child-{n}") for n, b in enumerate(batches, 1)]

    # THEN only the 8 deferred rows go out, and nobody got anything twice; the rows the
    # halted children had sent count as sent by those children (earlier tries of theirs)
    assert [r.sent for r in results] == [10, 10]
    assert [r["row"] for r in results[1].rows if not r.get("earlier")] == list(range(14, 22))
    assert all(r.get("earlier") for r in results[0].rows)
    assert len(later.calls) == 8
    assert quota.deliveries() + later.deliveries() == Counter(i["email"] for i in items)


# Case 19: one rejected recipient fails alone; all rejected fails every row, no retries.


def test_case19_one_rejected_recipient_fails_alone_and_is_not_retried(ledger, clock):
    items = kit.manifest(REJECT_CASE)
    ses = FakeSes(kit.script(REJECT_CASE, "ses_script.json"), clock=clock)

    result = run(items, ses, ledger, clock)

    rows = result.to_dict()["rows"]
    assert [(r["row"], r["status"]) for r in rows] == [
        (2, "sent"),
        (3, "failed"),
        (4, "sent"),
        (5, "sent"),
    ]
    assert rows[1]["code"] == "MessageRejected"
    assert rows[1]["reason"].endswith(
        "Email address is not verified. The following identities failed the check in region"
        " EU-WEST-1: b***@example.com"
    )
    assert (result.sent, result.failed, result.skipped) == (3, 1, 0)
    assert len(ses.calls) == 4
    assert clock.slept == []


def test_case19_a_rerun_reports_the_rejection_again_without_calling_ses(ledger, clock):
    items = kit.manifest(REJECT_CASE)
    ses = FakeSes(kit.script(REJECT_CASE, "ses_script.json"), clock=clock)
    run(items, ses, ledger, clock, attempt="execution-1")

    again = run(items, ses, ledger, clock, attempt="execution-2")

    assert [r["status"] for r in again.rows] == ["skipped", "failed", "skipped", "skipped"]
    assert again.rows[1]["code"] == "MessageRejected"
    assert len(ses.calls) == 4


def test_case19_sandbox_rejects_everyone_each_row_fails_once(ledger, clock):
    items = kit.manifest(REJECT_CASE)
    ses = FakeSes(kit.script(REJECT_CASE, "ses_script_all_rejected.json"), clock=clock)

    result = run(items, ses, ledger, clock)

    assert result.to_dict()["sent"] == 0
    assert result.failed == 4
    assert len(ses.calls) == 4
    for row, entry in zip(items, result.rows, strict=True):
        assert entry["code"] == "MessageRejected"
        assert entry["reason"].endswith(f": {mask(row['email'])}")
        assert row["email"] not in entry["reason"]
    outcomes = ledger.outcomes("c-sending-test")
    assert [(o.state, o.code) for o in outcomes] == [("failed", "MessageRejected")] * 4


# Case 20: a retried batch after a partial send mails nobody twice.


class CrashBeforeCall:
    """The invocation dies when it reaches call ``call`` (after the earlier sends were recorded)."""

    def __init__(self, inner, call: int) -> None:
        self.inner = inner
        self.call = call
        self.calls = 0

    def send(self, raw, *, sender, destinations, key=""):
        self.calls += 1
        if self.calls == self.call:
            raise SimulatedCrash("Task timed out after the third SendRawEmail returned")
        return self.inner.send(raw, sender=sender, destinations=destinations)


def test_case20_retried_batch_skips_what_the_dead_attempt_sent(ledger, clock):
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)

    # attempt 1: SES accepts alice, bob, carol; then the invocation dies
    with pytest.raises(SimulatedCrash):
        run(items, CrashBeforeCall(ses, call=4), ledger, clock, attempt="child-arn")
    # attempt 2 (the state machine's Retry of the same child) behaves normally
    result = run(items, ses, ledger, clock, attempt="child-arn")

    assert [(r["row"], r["status"], r.get("earlier", False)) for r in result.rows] == [
        (2, "sent", True),
        (3, "sent", True),
        (4, "sent", True),
        (5, "sent", False),
        (6, "sent", False),
    ]
    assert len(ses.accepted) == 5
    assert ses.deliveries() == Counter(i["email"] for i in items)
    stored = {o.row: o.message_id for o in ledger.outcomes("c-sending-test")}
    assert stored == {c.number + 1: c.message_id for c in ses.accepted}


def test_case20_rerunning_the_same_run_sends_nothing_a_new_run_id_sends_again_if_asked(
    ledger, clock
):
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)
    run(items, ses, ledger, clock, attempt="execution-1/child")

    again = run(items, ses, ledger, clock, attempt="execution-2/child")
    assert [r["status"] for r in again.rows] == ["skipped"] * 5
    assert len(ses.calls) == 5

    # A new campaign of the same letters holds them back, unless it names the first to send
    # again (run --send-again-from).
    new_items = kit.manifest(RETRY_CASE, campaign_id="c-new-run")
    held = run(new_items, ses, ledger, clock, campaign=kit.campaign("c-new-run"))
    assert [r.get("code") for r in held.rows] == ["SentUnder"] * 5
    assert len(ses.calls) == 5
    again_from = kit.campaign("c-new-run", send_again_from=["c-sending-test"])
    fresh = run(new_items, ses, ledger, clock, campaign=again_from, attempt="execution-3/child")
    assert fresh.sent == 5
    assert len(ses.calls) == 10


def test_case20_crash_between_acceptance_and_record_is_the_one_duplicate_window(ledger, clock):
    # GIVEN SES accepts carol and the attempt dies before the ledger records it
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)
    faulty = FaultyMailer(ses, crash_after=3, seed=20)
    with pytest.raises(SimulatedCrash):
        run(items, faulty, ledger, clock, attempt="child-arn")

    # WHEN the retry of the same child runs
    result = run(items, faulty, ledger, clock, attempt="child-arn")

    # THEN carol is taken over and sent again (at least once), everyone else exactly once
    assert ses.deliveries() == Counter({"carol@example.com": 2}) + Counter(
        i["email"] for i in items if i["email"] != "carol@example.com"
    )
    assert [r["row"] for r in result.rows if "takeover" in r] == [4]
    assert [o.takeovers for o in ledger.outcomes("c-sending-test")] == [0, 0, 1, 0, 0]


def test_case20_another_execution_waits_for_the_claim_lease(ledger, clock):
    # GIVEN a dead attempt left carol claimed (crash after SES accepted her message)
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)
    with pytest.raises(SimulatedCrash):
        run(items, FaultyMailer(ses, crash_after=3), ledger, clock, attempt="execution-1")

    # WHEN another execution of the same file runs before the lease has passed
    with pytest.raises(TransientSendError) as busy:
        run(items, ses, ledger, clock, attempt="execution-2")

    # THEN it sends the free rows and leaves carol for a later retry
    assert busy.value.details["deferred"] == [4]
    assert [r["status"] for r in busy.value.details["result"]["rows"]] == [
        "skipped",
        "skipped",
        "busy",
        "sent",
        "sent",
    ]
    # and once the lease has passed, it takes carol over
    clock.sleep(RetryPolicy().claim_lease_s + 1)
    result = run(items, ses, ledger, clock, attempt="execution-2")
    assert [r["status"] for r in result.rows] == ["skipped", "skipped", "sent", "sent", "sent"]
    assert ses.deliveries()["carol@example.com"] == 2


# Case 21: the size limit counts the encoded message, before calling SES.


@pytest.fixture(scope="module")
def size_files() -> dict[str, bytes]:
    rng = random.Random(21)
    sizes = {"small.pdf": 10 * 1024, "big.pdf": 8 * MIB, "huge.pdf": 31 * MIB}
    return {name: b"%PDF-1.4\n" + rng.randbytes(size - 9) for name, size in sizes.items()}


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (10 * MIB, ["sent", "failed", "failed"]),
        (41943040, ["sent", "sent", "failed"]),
    ],
    ids=["ses-v1-10MiB", "ses-v2-40MiB"],
)
def test_case21_size_limit_counts_the_encoded_message(ledger, clock, size_files, limit, expected):
    items = kit.manifest(SIZE_CASE)
    ses = FakeSes(clock=clock)

    result = run(
        items,
        ses,
        ledger,
        clock,
        campaign=kit.campaign(max_message_bytes=limit),
        fetch=kit.fetcher(size_files, default=None),
    )

    assert [r["status"] for r in result.rows] == expected
    assert len(ses.calls) == expected.count("sent")
    for entry in result.rows:
        if entry["status"] == "failed":
            assert entry["code"] == "MessageTooLarge"
            assert f"exceeds the limit of {limit // MIB} MiB" in entry["reason"]
            assert "not sent" in entry["reason"]
            assert "MAILMATRIX_MAX_MESSAGE_BYTES" in entry["reason"]
    if limit == 10 * MIB:
        # bob's file is 8 MiB, under the limit; his encoded message is not
        assert result.rows[1]["reason"].startswith("message 10.9")


def test_case21_size_rejections_are_permanent_and_not_retried(ledger, clock, size_files):
    items = kit.manifest(SIZE_CASE)[1:2]
    ses = FakeSes(clock=clock)
    campaign = kit.campaign(max_message_bytes=10 * MIB)
    fetch = kit.fetcher(size_files, default=None)
    run(items, ses, ledger, clock, campaign=campaign, fetch=fetch)

    again = run(items, ses, ledger, clock, campaign=campaign, fetch=fetch, attempt="child-2")

    assert again.rows == [
        {
            "row": 3,
            "status": "failed",
            "code": "MessageTooLarge",
            "reason": again.rows[0]["reason"],
            "earlier": True,  # failed by the first run: the summary counts it apart
        }
    ]
    assert ses.calls == []
    assert clock.slept == []


def test_case21_a_message_exactly_at_the_limit_goes_one_byte_over_does_not(ledger, clock):
    first = kit.manifest(SIZE_CASE)[0]
    raw, _ = compose(first, kit.campaign(), catalog=kit.catalog(), fetch_attachment=kit.fetcher())
    ses = FakeSes(clock=clock)
    outcomes = {}

    for name, limit in (("c-over", len(raw) - 1), ("c-exact", len(raw))):
        items = kit.manifest(SIZE_CASE, campaign_id=name)[:1]
        campaign = kit.campaign(name, max_message_bytes=limit)
        outcomes[name] = [
            r["status"] for r in run(items, ses, ledger, clock, campaign=campaign).rows
        ]

    assert outcomes == {"c-over": ["failed"], "c-exact": ["sent"]}


def test_case20_every_copy_of_one_letter_carries_one_message_id():
    # GIVEN two rows of one campaign (two letters) and the first row of another campaign
    first, second = kit.manifest(SIZE_CASE)[:2]
    elsewhere = kit.manifest(SIZE_CASE, campaign_id="c-other")[0]

    def message_id(item) -> bytes:
        raw, _ = compose(
            item, kit.campaign(), catalog=kit.catalog(), fetch_attachment=kit.fetcher()
        )
        return next(line for line in raw.split(b"\r\n") if line.startswith(b"Message-ID:"))

    # WHEN each is composed, the first twice (a retry whose first try may have arrived)
    ids = [message_id(first), message_id(first), message_id(second), message_id(elsewhere)]

    # THEN both copies of the first letter carry one Message-ID, each other letter its own,
    # and the ledger's key is not shown in it
    assert ids[0] == ids[1]
    assert len(set(ids)) == 3
    assert first["key"].encode() not in ids[0] and first["key"][:32].encode() not in ids[0]


# A letter's print goes with its claim (one ledger write a letter) once a row of the batch
# was claimed; a rerun claims first and composes nothing it skips.


class CountingLedger:
    """The ledger, noting each claim (whether it carried a letter's print) and hold_letter."""

    def __init__(self, ledger: SqliteLedger) -> None:
        self.ledger = ledger
        self.calls: list[str] = []

    def claim(self, key, **kwargs):
        self.calls.append("claim+print" if kwargs.get("letter") is not None else "claim")
        return self.ledger.claim(key, **kwargs)

    def hold_letter(self, key, letter):
        self.calls.append("hold_letter")
        return self.ledger.hold_letter(key, letter)

    def __getattr__(self, name):
        return getattr(self.ledger, name)


def counting_composer(rows: list[int]):
    def composer(item, campaign, **kwargs):
        rows.append(item["row"])
        return compose(item, campaign, **kwargs)

    return composer


def counted_run(items, ses, ledger, clock):
    """A second run (execution-2) of ``items``; its result, counted claims and rows composed."""
    counting, composed = CountingLedger(ledger), []
    result = run(
        items,
        ses,
        counting,
        clock,
        attempt="execution-2/child",
        composer=counting_composer(composed),
    )
    return result, counting, composed


def test_a_first_run_claims_each_letter_after_the_first_with_its_print(ledger, clock):
    items = kit.manifest(RETRY_CASE)
    counting, composed = CountingLedger(ledger), []
    ses = FakeSes(clock=clock)

    result = run(items, ses, counting, clock, composer=counting_composer(composed))

    assert result.sent == 5 and len(ses.calls) == 5
    assert counting.calls == ["claim", "hold_letter"] + ["claim+print"] * 4
    assert composed == [2, 3, 4, 5, 6]
    # AND each letter's print is kept with its key: a copy's letters are all held back
    copy = run(
        kit.manifest(RETRY_CASE, "c-copy"), ses, ledger, clock, campaign=kit.campaign("c-copy")
    )
    assert [r.get("code") for r in copy.rows] == ["SentUnder"] * 5
    assert len(ses.calls) == 5


def test_a_rerun_of_rows_sent_composes_none_of_them(ledger, clock):
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)
    run(items, ses, ledger, clock, attempt="execution-1/child")

    again, counting, composed = counted_run(items, ses, ledger, clock)

    assert [r["status"] for r in again.rows] == ["skipped"] * 5
    assert composed == [] and counting.calls == ["claim"] * 5
    assert len(ses.calls) == 5


def test_a_letter_composed_first_for_a_row_sent_before_is_not_sent(ledger, clock):
    # GIVEN the second row sent by an earlier run
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)
    run(items[1:2], ses, ledger, clock, attempt="execution-1/child")

    # WHEN the whole file runs THEN that row, composed after the first was claimed, is
    # skipped unsent, and the row after it is claimed before it is composed
    result, counting, composed = counted_run(items, ses, ledger, clock)

    assert [r["status"] for r in result.rows] == ["sent", "skipped", "sent", "sent", "sent"]
    assert len(ses.calls) == 5
    assert [call for call in counting.calls if call.startswith("claim")] == [
        "claim",
        "claim+print",
        "claim",
        "claim+print",
        "claim+print",
    ]
    assert composed == [2, 3, 4, 5, 6]
    stored = {o.row: o.state for o in ledger.outcomes("c-sending-test")}
    assert stored == {2: "sent", 3: "sent", 4: "sent", 5: "sent", 6: "sent"}


def test_a_letter_that_cannot_be_composed_first_fails_once_claimed(ledger, clock):
    # GIVEN the third row's file missing
    items = kit.manifest(RETRY_CASE)
    files = {i["attachment"]: b"%PDF-1.4\n%%EOF\n" for i in items if i["row"] != 4}
    ses = FakeSes(clock=clock)

    # WHEN the file runs THEN that row fails alone, recorded failed; the next ones are sent
    result = run(items, ses, ledger, clock, fetch=kit.fetcher(files, default=None))

    statuses = [(r["row"], r["status"], r.get("code")) for r in result.rows]
    assert statuses == [
        (2, "sent", None),
        (3, "sent", None),
        (4, "failed", "AttachmentNotFound"),
        (5, "sent", None),
        (6, "sent", None),
    ]
    assert len(ses.calls) == 4
    stored = {o.row: o.state for o in ledger.outcomes("c-sending-test")}
    assert stored[4] == "failed"


def test_a_letter_that_went_out_is_recorded_before_the_next_row_is_composed(ledger, clock):
    # GIVEN a mailer that takes every letter, and a composer that counts, each time it is
    # called, the letters taken and not yet recorded sent (a crash now would leave those in
    # doubt, and a rerun could send them twice)
    items = kit.manifest(RETRY_CASE)
    ses = FakeSes(clock=clock)
    unrecorded: list[int] = []

    def composer(item, campaign, **kwargs):
        sent = [o for o in ledger.outcomes("c-sending-test") if o.state == "sent"]
        unrecorded.append(len(ses.calls) - len(sent))
        return compose(item, campaign, **kwargs)

    # WHEN the batch is sent
    result = run(items, ses, ledger, clock, composer=composer)

    # THEN no row was composed while a letter that went out was unrecorded: the next row is
    # composed before the letter goes, and its claim records the letter right after
    assert result.sent == 5
    assert unrecorded == [0] * 5


class _SendingTheCopyMeanwhile:
    """A mailer that, as it is handed the first letter, runs a copy of the file (its own
    campaign; ``other``, another file), which must wait; then takes the letter, or refuses
    it for good (``refuse``)."""

    def __init__(self, ses: FakeSes, ledger: SqliteLedger, clock, *, refuse: bool, other=None):
        self.ses, self.ledger, self.clock, self.refuse = ses, ledger, clock, refuse
        self.other = other or _run_copy
        self.meanwhile: ClaimBusy | None = None

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        if self.meanwhile is None:
            with pytest.raises(ClaimBusy) as busy:
                self.other(self.ses, self.ledger, self.clock)
            self.meanwhile = busy.value
        if self.refuse:
            raise PermanentSendError("550 5.7.1 Message rejected by policy")
        return self.ses.send(raw, sender=sender, destinations=destinations)


def _run_copy(ses: FakeSes, ledger: SqliteLedger, clock):
    copy = kit.manifest(RETRY_CASE, "c-copy")[:1]
    return run(copy, ses, ledger, clock, campaign=kit.campaign("c-copy"), attempt="copy/child")


@pytest.mark.parametrize("refused", [False, True], ids=["sent", "refused"])
def test_a_copys_letter_waits_while_its_like_is_being_sent_under_another_file(
    ledger, clock, refused
):
    # GIVEN a file's first letter being handed to the mail server when a renamed copy of the
    # file runs (its own campaign)
    ses = FakeSes(clock=clock)
    mailer = _SendingTheCopyMeanwhile(ses, ledger, clock, refuse=refused)
    run(kit.manifest(RETRY_CASE)[:1], mailer, ledger, clock)

    # THEN the copy's row waited (busy: tried again later), not held back as received: the
    # letter it is like might yet fail
    assert mailer.meanwhile is not None
    rows = mailer.meanwhile.details["result"]["rows"]
    assert [row["status"] for row in rows] == ["busy"]
    assert "is being sent under" in rows[0]["reason"]

    # AND tried again, the copy's row is held back once that letter went out, and sent when
    # it was refused: one letter reaches the person either way
    again = _run_copy(ses, ledger, clock)
    if refused:
        assert again.sent == 1 and len(ses.calls) == 1
    else:
        assert [row.get("code") for row in again.rows] == ["SentUnder"]
        assert len(ses.calls) == 1


# Two different files naming one person's own file for two people, run at the same moment:
# the claim holds the second back (both validated clean: nothing was recorded yet).


def _offers_final(ses: FakeSes, ledger: SqliteLedger, clock, **line):
    """offers-final.csv's run: its row 2 names alice.pdf, Alice's own file, for Bob."""
    bob = kit.item("c-final", 2, "bob@example.com", "Bob", "alice.pdf")
    final = kit.campaign("c-final", source={"key": "incoming/offers-final.csv"})
    final.update(line.pop("campaign", {}))
    items = [{**bob, "own_attachment": True, **line}]
    return run(items, ses, ledger, clock, campaign=final, attempt="final/child")


def _alices_letter(ledger: SqliteLedger, clock, mailer) -> None:
    """offers.csv's run of Alice's row, her own file alice.pdf, handed to ``mailer``."""
    (alice,) = kit.manifest(RETRY_CASE)[:1]
    offers = kit.campaign(source={"key": "incoming/offers.csv"})
    run([{**alice, "own_attachment": True}], mailer, ledger, clock, campaign=offers)


@pytest.mark.parametrize("refused", [False, True], ids=["sent", "refused"])
def test_a_row_naming_a_file_another_file_sends_to_another_person_waits_then_fails(
    ledger, clock, refused
):
    # GIVEN Alice's letter with her own file being handed to the mail server when
    # offers-final.csv, which names her file for Bob, runs
    ses = FakeSes(clock=clock)
    mailer = _SendingTheCopyMeanwhile(ses, ledger, clock, refuse=refused, other=_offers_final)
    _alices_letter(ledger, clock, mailer)

    # THEN Bob's row waited (busy: tried again later): Alice's letter might yet fail
    assert mailer.meanwhile is not None
    rows = mailer.meanwhile.details["result"]["rows"]
    assert [row["status"] for row in rows] == ["busy"]
    assert "being sent to another recipient under offers.csv now, as row 2" in rows[0]["reason"]

    # AND tried again, Bob's row fails, naming offers.csv and its row, once Alice's letter
    # went out, and when hers was refused too: her file is hers, whatever became of it
    again = _offers_final(ses, ledger, clock)
    (row,) = again.rows
    if refused:
        assert (row["status"], row["code"]) == ("failed", "AttachmentOfAnother")
        assert row["reason"].startswith(
            "alice.pdf was named as the own file of another recipient (a***@example.com) in"
            " offers.csv (campaign c-sending-test), row 2 of that run, and that letter never"
            " went"
        )
        assert again.sent == 0 and ses.calls == []  # (hers was refused before the server)
        return
    assert (row["status"], row["code"], row["file"]) == (
        "failed",
        "AttachmentOfAnother",
        "offers.csv",
    )
    assert row["reason"].startswith(
        "alice.pdf was sent to another recipient (a***@example.com) under offers.csv (campaign"
        " c-sending-test) as their own letter (row 2 of that run), so it is not sent to this"
        " recipient"
    )
    assert len(ses.calls) == 1


def test_a_file_sent_again_does_not_excuse_another_persons_file_a_corrected_address_does(
    ledger, clock
):
    # GIVEN Alice's letter with her own file sent by offers.csv
    ses = FakeSes(clock=clock)
    _alices_letter(ledger, clock, ses)

    # WHEN offers-final.csv, naming her file for Bob, names offers.csv to send again
    again = _offers_final(ses, ledger, clock, campaign={"send_again_from": ["offers.csv"]})

    # THEN Bob's row fails all the same: that file is another person's letter
    assert [row.get("code") for row in again.rows] == ["AttachmentOfAnother"]
    assert len(ses.calls) == 1
    # AND with the row's address said corrected (--corrected-address 2) it is sent
    corrected = _offers_final(ses, ledger, clock, corrected_address=True)
    assert corrected.sent == 1 and len(ses.calls) == 2
