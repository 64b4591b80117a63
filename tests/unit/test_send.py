"""send_batch beyond the cases: each error kind, the halt's lifetime, time budget, envelope."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import unicodedata
from collections.abc import Iterator
from contextlib import closing

import pytest

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.core.addresses import mask, parse_address
from mailmatrix.core.contents import sample_print
from mailmatrix.core.pacing import Pacer
from mailmatrix.core.send import (
    RetryPolicy,
    classify_service_error,
    format_size,
    idempotency_key,
    letter_print,
    recipient_key,
    send_batch,
    sender_problem,
    template_sets_changed,
)
from mailmatrix.core.templates import Rendered, load_catalog
from mailmatrix.errors import (
    AccountSendingHalted,
    ClaimBusy,
    ObjectChanged,
    PermanentSendError,
    SendError,
    ServiceUnreachable,
    StorageError,
    TemplateSetsChanged,
    Throttled,
    TransientSendError,
)
from mailmatrix.ports import SENT, SentCopy, Upload
from tests.fixtures.sending import kit

CID = "c-sending-test"


@pytest.fixture
def clock() -> kit.FakeClock:
    return kit.FakeClock()


@pytest.fixture
def ledger(tmp_path, clock) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(str(tmp_path / "ledger.db"), clock=clock)) as kept:
        yield kept


def items(count: int = 4, campaign_id: str = CID) -> list[dict]:
    return [
        kit.item(campaign_id, row, f"person{row}@example.com", f"Person {row}", f"p{row}.pdf")
        for row in range(2, 2 + count)
    ]


def fail_calls(
    *calls: int, code="Throttling", message="Maximum sending rate exceeded.", status=400
):
    error = {"Code": code, "Message": message, "HTTPStatusCode": status}
    return {"failures": [{"call": call, "error": error} for call in calls]}


def run(batch, mailer, ledger, clock, *, attempt="child-1", campaign=None, **kwargs):
    return send_batch(
        batch,
        campaign or kit.campaign(),
        catalog=kwargs.pop("catalog", None) or kit.catalog(),
        fetch_attachment=kwargs.pop("fetch", kit.fetcher()),
        mailer=mailer,
        ledger=ledger,
        attempt=attempt,
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(7),
        **kwargs,
    )


def test_idempotency_key_is_the_sha256_of_campaign_address_and_template():
    expected = hashlib.sha256(b"c-1|anna@xn--bcher-kva.example|offer").hexdigest()
    assert idempotency_key("c-1", "anna@xn--bcher-kva.example", "offer") == expected
    # case-insensitive like duplicate detection; another template is another email
    assert idempotency_key("c-1", "Anna@XN--BCHER-KVA.example", "offer") == expected
    assert idempotency_key("c-1", "anna@xn--bcher-kva.example", "rejection") != expected


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("Throttling", "Maximum sending rate exceeded.", 400, Throttled),
        ("ThrottlingException", "Maximum sending rate exceeded.", 429, Throttled),
        ("TooManyRequestsException", "Rate exceeded", 429, Throttled),
        ("Throttling", "Daily message quota exceeded.", 400, AccountSendingHalted),
        ("LimitExceededException", "Daily message quota exceeded", 400, AccountSendingHalted),
        ("AccountSendingPausedException", "Sending paused for this account", 400, None),
        ("SendingPausedException", "Sending is paused", 400, AccountSendingHalted),
        ("MailFromDomainNotVerifiedException", "MAIL FROM not verified", 400, None),
        ("MessageRejected", "Email address is not verified.", 400, PermanentSendError),
        ("BadRequestException", "Invalid address", 400, PermanentSendError),
        ("InternalFailure", "oops", 500, TransientSendError),
        ("ServiceUnavailable", "try later", 503, TransientSendError),
        ("SomethingNew", "gateway", 502, TransientSendError),
    ],
)
def test_service_errors_are_classified_by_code_and_message(code, message, status, kind):
    error = classify_service_error(code, message, status=status)

    assert type(error) is (kind or AccountSendingHalted)
    assert error.message == f"ses: {code}: {message}"
    assert error.details == {"code": code, "status": status}


def test_a_batch_reports_every_row_in_the_architecture_shape(ledger, clock):
    batch = items(3)
    ses = FakeSes(
        {"by_destination": {"person3@example.com": {"Code": "MessageRejected", "Message": "no"}}},
        clock=clock,
    )

    result = run(batch, ses, ledger, clock)

    assert result.to_dict() == {
        "sent": 2,
        "skipped": 0,
        "failed": 1,
        "rows": [
            {"row": 2, "status": "sent", "message_id": "fake-ses-0000001"},
            {
                "row": 3,
                "status": "failed",
                "code": "MessageRejected",
                "reason": "fake-ses: MessageRejected: no",
            },
            {"row": 4, "status": "sent", "message_id": "fake-ses-0000003"},
        ],
    }


def test_the_envelope_uses_the_bare_sender_and_every_recipient(ledger, clock):
    row = items(1)[0]
    row["cc"] = ["Copy <copy@example.com>"]
    row["bcc"] = ["hidden@example.com"]
    ses = FakeSes(clock=clock, keep_raw=True)

    run([row], ses, ledger, clock)

    call = ses.calls[0]
    assert call.sender == "talent@example.com"
    assert call.destinations == (
        "person2@example.com",
        "copy@example.com",
        "hidden@example.com",
    )
    assert b"hidden@example.com" not in call.raw
    assert b"Subject: Your letter, Person 2" in call.raw


@pytest.mark.parametrize(
    ("kind", "failing"),
    # a throttle twice on one row; server errors once on each of two rows (twice on one row
    # would be two tries whose outcome is unknown: see the OutcomeUnknown test)
    [("Throttling", (2, 3)), ("InternalFailure", (2, 4))],
)
def test_passing_faults_are_retried_within_the_batch(ledger, clock, kind, failing):
    ses = FakeSes(
        fail_calls(*failing, code=kind, status=400 if kind == "Throttling" else 500), clock=clock
    )

    result = run(items(3), ses, ledger, clock)

    assert result.sent == 3
    assert len(ses.calls) == 5
    assert len(clock.slept) == 2


def test_a_recipient_whose_fault_outlasts_the_retries_does_not_hold_up_the_rest(ledger, clock):
    # GIVEN the second row fails on every one of its tries with a passing (non-rate) fault
    # (as many unknown outcomes allowed as tries: the cap on those has its own test)
    policy = RetryPolicy(tries=3, unknown_tries=10)
    ses = FakeSes(fail_calls(2, 3, 4, code="InternalFailure", status=500), clock=clock)

    # WHEN the batch runs
    with pytest.raises(TransientSendError) as stopped:
        run(items(4), ses, ledger, clock, policy=policy)

    # THEN the other rows were sent; only that row waits, and the state machine retries it
    assert stopped.value.details["deferred"] == [3]
    assert stopped.value.details["result"]["sent"] == 3
    assert "row 3: gave up after 3 tries" in stopped.value.message
    assert [(o.row, o.state) for o in ledger.outcomes(CID)] == [
        (2, "sent"),
        (3, "released"),
        (4, "sent"),
        (5, "sent"),
    ]

    # AND the retry sends it, nobody twice
    result = run(items(4), ses, ledger, clock, policy=policy)
    assert [r["status"] for r in result.rows] == ["sent"] * 4
    assert set(ses.deliveries().values()) == {1}


def test_a_row_sent_after_a_fault_with_an_unknown_outcome_is_flagged(ledger, clock):
    # GIVEN the second row's first call fails with a fault that may hide an accepted message,
    # and the third row's first call is throttled (refused for sure)
    ses = FakeSes(fail_calls(2, code="InternalFailure", status=500), clock=clock)
    ses_throttle = FakeSes(fail_calls(2, code="Throttling", status=400), clock=clock)

    # WHEN each batch runs
    result = run(items(2), ses, ledger, clock)
    throttled = run(items(2, campaign_id="c-other"), ses_throttle, ledger, clock)

    # THEN only the unknown outcome is flagged as a possible duplicate in the report
    assert result.rows[1]["takeover"] == "an earlier try timed out or lost its reply"
    assert "takeover" not in throttled.rows[1]


def test_a_row_whose_tries_may_all_have_been_taken_fails_instead_of_being_sent_again(ledger, clock):
    # GIVEN a service that takes row 3's message and then fails to answer, every time
    person = "person3@example.com"
    timeout = {"Code": "InternalFailure", "Message": "no reply", "HTTPStatusCode": 500}
    ses = FakeSes({"by_destination": {person: timeout}}, clock=clock)

    # WHEN the batch runs
    result = run(items(3), ses, ledger, clock)

    # THEN row 3 is tried twice only, then fails as OutcomeUnknown; the others are sent
    assert [r["status"] for r in result.rows] == ["sent", "failed", "sent"]
    assert result.rows[1]["code"] == "OutcomeUnknown"
    assert result.rows[1]["reason"].endswith(
        "check whether the recipient got it; if not, send it again with:"
        " mailmatrix run FILE --retry-unknown"
    )
    assert sum(1 for call in ses.calls if person in call.destinations) == 2
    # AND a retry of the batch does not send it again: it failed for good, in doubt
    again = run(items(3), ses, ledger, clock)
    assert again.rows[1]["status"] == "failed"
    assert sum(1 for call in ses.calls if person in call.destinations) == 2
    (outcome,) = [o for o in ledger.outcomes(CID) if o.row == 3]
    assert (outcome.state, outcome.doubtful) == ("failed", True)


def test_an_earlier_attempt_s_doubt_counts_towards_the_unknown_tries(ledger, clock):
    # GIVEN row 2 claimed by an attempt that died (its send may have gone out)
    ledger.claim(items(1)[0]["key"], campaign=CID, row=2, attempt="child-1")
    timeout = {"Code": "InternalFailure", "Message": "no reply", "HTTPStatusCode": 500}
    ses = FakeSes(fail_calls(1, code=timeout["Code"], status=500), clock=clock)

    # WHEN the same child's next attempt meets one more unknown outcome
    result = run(items(1), ses, ledger, clock, attempt="child-1")

    # THEN it stops there: two possible copies already
    assert result.rows[0]["code"] == "OutcomeUnknown"
    assert len(ses.calls) == 1


def test_a_row_whose_attempts_keep_dying_is_not_sent_a_third_time(ledger, clock):
    # GIVEN row 2 claimed by two attempts in turn that both died holding it
    key = items(1)[0]["key"]
    ledger.claim(key, campaign=CID, row=2, attempt="child-1", lease_until=clock.now + 1)
    clock.sleep(2)
    ledger.claim(key, campaign=CID, row=2, attempt="child-2", lease_until=clock.now + 1)
    clock.sleep(2)
    ses = FakeSes(clock=clock)

    # WHEN a third attempt comes to it
    result = run(items(1), ses, ledger, clock, attempt="child-3")

    # THEN it does not send it again: two copies may be out already
    assert result.rows[0]["code"] == "OutcomeUnknown"
    assert ses.calls == []


def test_a_row_failed_in_doubt_is_sent_once_more_after_release_failed(ledger, clock):
    # GIVEN row 2 failed as OutcomeUnknown after two attempts died holding it, in a campaign
    # run on a stack
    key = items(1)[0]["key"]
    for attempt in ("child-1", "child-2"):
        ledger.claim(key, campaign=CID, row=2, attempt=attempt, lease_until=clock.now + 1)
        clock.sleep(2)
    on_aws = kit.campaign(
        retry_command="mailmatrix aws send offers.csv --stack mm --retry-failed",
        retry_unknown_command="mailmatrix aws send offers.csv --stack mm --retry-unknown",
    )
    failed = run(items(1), FakeSes(clock=clock), ledger, clock, attempt="child-3", campaign=on_aws)
    # AND its reason gives the stack's command for rows failed as OutcomeUnknown
    assert failed.rows[0]["reason"].endswith(
        "if not, send it again with: mailmatrix aws send offers.csv --stack mm --retry-unknown"
    )
    # AND releasing the campaign's other failed rows leaves it failed
    assert ledger.release_failed(CID) == 0

    # WHEN the operator releases the rows failed as OutcomeUnknown and the next run comes to it
    assert ledger.release_failed(CID, unknown=True) == 1
    ses = FakeSes(clock=clock)
    result = run(items(1), ses, ledger, clock, attempt="run-2", campaign=on_aws)

    # THEN it is sent, once, and still marked as a possible duplicate
    assert [(r["status"], bool(r.get("takeover"))) for r in result.rows] == [("sent", True)]
    assert len(ses.calls) == 1


def test_a_row_refused_after_a_try_that_may_have_been_taken_fails_as_outcome_unknown(ledger, clock):
    # GIVEN a service that takes the first try without answering, then refuses for good
    class LostThenRefused:
        calls = 0

        def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
            self.calls += 1
            if self.calls == 1:
                raise TransientSendError("reply lost")  # not refused: it may have gone out
            raise PermanentSendError("550 mailbox unavailable")

    # WHEN the row is sent
    result = run(items(1), LostThenRefused(), ledger, clock)

    # THEN it fails as OutcomeUnknown, saying the first try may have gone out, not as a plain
    # refusal that a retry of failures would send again
    (row,) = result.rows
    assert (row["status"], row["code"]) == ("failed", "OutcomeUnknown")
    assert row["reason"].startswith(
        "an earlier try may have been taken without an answer, then the service refused it"
        " (550 mailbox unavailable); not sent again: check whether the recipient got it"
    )
    assert ledger.release_failed(CID) == 0
    assert ledger.release_failed(CID, unknown=True) == 1


def test_a_row_sent_after_a_refusing_answer_is_not_flagged(ledger, clock):
    # GIVEN a mailer whose first call answers "not now" (e.g. an SMTP 451): nothing taken
    class RefusesOnce:
        def __init__(self) -> None:
            self.calls = 0

        def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
            self.calls += 1
            if self.calls == 1:
                raise TransientSendError("451 try again later", refused=True)
            return f"m-{self.calls}"

    # WHEN the row is sent on the next try
    result = run(items(1), RefusesOnce(), ledger, clock)

    # THEN it is sent and not reported as a possible duplicate
    assert result.rows[0]["status"] == "sent"
    assert "takeover" not in result.rows[0]


@pytest.mark.parametrize(("code", "status", "raised"), [("Throttling", 400, Throttled)])
def test_passing_faults_that_outlast_the_retries_stop_the_batch(
    ledger, clock, code, status, raised
):
    # GIVEN the second row fails on every one of its tries
    policy = RetryPolicy(tries=3)
    ses = FakeSes(fail_calls(2, 3, 4, code=code, status=status), clock=clock)

    # WHEN the batch runs
    with pytest.raises(raised) as stopped:
        run(items(4), ses, ledger, clock, policy=policy)

    # THEN it stops at that row, raises for the state machine's Retry, and leaves the rest
    assert stopped.value.message.startswith("send_batch: row 3: gave up after 3 tries: ")
    assert stopped.value.details["deferred"] == [3, 4, 5]
    assert stopped.value.details["result"]["sent"] == 1
    assert len(ses.calls) == 4
    assert [(o.row, o.state, o.code) for o in ledger.outcomes(CID)] == [
        (2, "sent", None),
        (3, "released", code),
    ]

    # AND the state machine's retry sends the rest, the first row only once
    result = run(items(4), ses, ledger, clock, policy=policy)
    assert [r["status"] for r in result.rows] == ["sent"] * 4
    assert result.rows[0].get("earlier") is True
    assert ses.deliveries()["person2@example.com"] == 1


def test_a_mail_service_that_cannot_be_reached_stops_the_batch_at_the_first_row(ledger, clock):
    # GIVEN a mail service that cannot be reached at all (no connection)
    class Unreachable:
        calls = 0

        def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
            self.calls += 1
            raise ServiceUnreachable("smtp 127.0.0.1:1: connect: refused", refused=True)

    mailer = Unreachable()

    # WHEN a batch runs
    with pytest.raises(TransientSendError) as stopped:
        run(items(4), mailer, ledger, clock, policy=RetryPolicy(tries=3))

    # THEN it stops after the first row's tries, not after every row's (the next rows would
    # fail the same way), for the state machine's Retry, which it sees as a passing fault
    assert mailer.calls == 3
    assert stopped.value.details["deferred"] == [2, 3, 4, 5]
    assert getattr(stopped.value, "asl_error", type(stopped.value).__name__) == (
        "TransientSendError"
    )
    # AND nothing is in doubt: no connection, no message handed over
    assert [(o.row, o.state, o.doubtful) for o in ledger.outcomes(CID)] == [(2, "released", False)]


TWO_SETS = {
    "manifest.yaml": "column: Status\nsets:\n  offer:\n    when: [Offer]\n"
    "  rejection:\n    when: [Rejection]\n",
    "offer/subject.txt": "Offer for {{ Name }}",
    "offer/body.txt": "Welcome\n",
    "rejection/subject.txt": "About your application, {{ Name }}",
    "rejection/body.txt": "Sorry\n",
}


@pytest.mark.parametrize(
    ("earlier", "sent_now"),
    [
        ("sent", False),
        ("claimed", False),
        ("released", True),
        ("released-uncertain", False),
        ("failed-unknown", False),
        ("failed", True),
    ],
)
def test_a_row_is_not_sent_a_letter_of_another_set_after_one_may_have_gone_out(
    ledger, clock, earlier, sent_now
):
    # GIVEN row 2 had the offer letter in an earlier run (sent, given back, or failed), and
    # now asks for the rejection (its Status changed); row 3 is new
    catalog = load_catalog(TWO_SETS)
    batch = items(2)
    for item in batch:
        item["template"] = "rejection"
        item["key"] = idempotency_key(CID, item["email"], "rejection")
    offered = idempotency_key(CID, batch[0]["email"], "offer")
    ledger.claim(offered, campaign=CID, row=2, attempt="run-1")
    if earlier == "sent":
        ledger.record_sent(offered, message_id="m-offer")
    elif earlier != "claimed":
        code = "OutcomeUnknown" if earlier == "failed-unknown" else "MessageRejected"
        permanent = not earlier.startswith("released")
        uncertain = earlier in ("released-uncertain", "failed-unknown")
        ledger.record_failed(
            offered, code=code, reason="x", permanent=permanent, uncertain=uncertain
        )

    # WHEN the batch runs
    ses = FakeSes(clock=clock)
    result = run(batch, ses, ledger, clock, catalog=catalog)

    # THEN row 2 gets the rejection only if the offer cannot have gone out; row 3 gets it
    statuses = [(r["row"], r["status"], r.get("code")) for r in result.rows]
    expected = (2, "sent", None) if sent_now else (2, "failed", "OtherLetterSent")
    assert statuses == [expected, (3, "sent", None)]
    assert len(ses.calls) == 1 + sent_now


def test_a_row_whose_own_letter_went_out_is_skipped_whatever_else_went(ledger, clock):
    # GIVEN both the offer and the rejection went to row 2's address in earlier runs
    catalog = load_catalog(TWO_SETS)
    (item,) = items(1)
    for name in ("offer", "rejection"):
        key = idempotency_key(CID, item["email"], name)
        ledger.claim(key, campaign=CID, row=2, attempt="run-1")
        ledger.record_sent(key, message_id=f"m-{name}")
    item["template"], item["key"] = "rejection", idempotency_key(CID, item["email"], "rejection")

    # WHEN the rejection row runs again THEN it is skipped as already sent, as any rerun
    result = run([item], FakeSes(clock=clock), ledger, clock, catalog=catalog)
    assert [(r["status"], r.get("message_id")) for r in result.rows] == [("skipped", "m-rejection")]


def test_backoff_is_full_jitter_under_an_exponential_cap():
    policy = RetryPolicy(base_s=0.5, cap_s=3.0)
    rng = random.Random(1)

    delays = {n: [policy.backoff(n, rng) for _ in range(200)] for n in (1, 2, 3, 4, 5)}

    for failures, bound in {1: 0.5, 2: 1.0, 3: 2.0, 4: 3.0, 5: 3.0}.items():
        assert 0 <= min(delays[failures]) < bound * 0.1
        assert bound * 0.9 < max(delays[failures]) <= bound


def test_an_account_halt_stops_this_batch_and_every_other_until_the_hold_ends(ledger, clock):
    paused = {"Code": "SendingPausedException", "Message": "Sending is paused for this account."}
    ses = FakeSes({"failures": [{"call": 2, "error": paused}]}, clock=clock)
    first, second = items(6)[:3], items(6)[3:]

    with pytest.raises(AccountSendingHalted) as halted:
        run(first, ses, ledger, clock, attempt="child-1")
    with pytest.raises(AccountSendingHalted) as sibling:
        run(second, ses, ledger, clock, attempt="child-2")

    assert halted.value.details["deferred"] == [3, 4]
    assert "account cannot send" in halted.value.message
    assert sibling.value.details["deferred"] == [5, 6, 7]
    assert "halted just now by an earlier batch: " in sibling.value.message
    assert sibling.value.details["attempt"] == "child-1"
    assert len(ses.calls) == 2
    assert clock.slept == []

    # a campaign setting can shorten the hold; after it, a redrive sends what was deferred
    clock.sleep(11)
    short = kit.campaign(halt_hold_seconds=10)
    results = [
        run(b, ses, ledger, clock, attempt=f"child-{n}", campaign=short)
        for n, b in ((1, first), (2, second))
    ]
    assert [r.sent for r in results] == [3, 3]
    assert len(ses.calls) == 7
    assert set(ses.deliveries().values()) == {1}


def test_clearing_the_halt_lets_a_redrive_send_at_once(ledger, clock):
    ledger.halt(CID, code="Throttling", reason="Daily message quota exceeded.", attempt="x")
    ses = FakeSes(clock=clock)
    with pytest.raises(AccountSendingHalted):
        run(items(2), ses, ledger, clock)

    ledger.clear_halt(CID)

    assert run(items(2), ses, ledger, clock).sent == 2


def test_a_missing_attachment_fails_its_row_and_the_batch_goes_on(ledger, clock):
    ses = FakeSes(clock=clock)
    fetch = kit.fetcher({"p2.pdf": b"%PDF-1.4 two", "p4.pdf": b"%PDF-1.4 four"}, default=None)

    result = run(items(3), ses, ledger, clock, fetch=fetch)

    assert result.rows[1] == {
        "row": 3,
        "status": "failed",
        "code": "AttachmentNotFound",
        "reason": "attachment not found: p3.pdf",
    }
    assert (result.sent, result.failed) == (2, 1)
    assert len(ses.calls) == 2


def test_an_attachment_no_longer_the_version_listed_is_given_back_and_the_batch_goes_on(
    ledger, clock
):
    # GIVEN rows whose manifest lines carry their attachments' tags, and storage where p3.pdf
    # is now another version (same size)
    batch = items(3)
    for item in batch:
        item.update(attachment_size=len(b"%PDF-1.4\n%%EOF\n"), attachment_tag=f"v1-{item['row']}")
    asked = []

    def fetch(name, tag):
        asked.append((name, tag))
        if name == "p3.pdf":
            raise ObjectChanged(f"attachments/{name}: not the version listed before")
        return b"%PDF-1.4\n%%EOF\n"

    # WHEN the batch is sent
    result = run(batch, FakeSes(clock=clock), ledger, clock, fetch=fetch)

    # THEN each file was asked for in the version listed; p3.pdf's row failed, given back
    assert asked == [("p2.pdf", "v1-2"), ("p3.pdf", "v1-3"), ("p4.pdf", "v1-4")]
    assert result.rows[1] == {
        "row": 3,
        "status": "failed",
        "code": "AttachmentChanged",
        "reason": "attachment changed since the rows were validated: p3.pdf is not the file"
        " validation listed (replaced, edited, or relinked to another file since?); run the"
        " file again: its attachments are checked again (rows already sent are skipped)",
    }
    assert (result.sent, result.failed) == (2, 1)
    assert [o.state for o in ledger.outcomes(CID)] == ["sent", "released", "sent"]


def test_an_attachment_named_pdf_that_is_no_pdf_is_not_sent_and_given_back(ledger, clock):
    # GIVEN storage whose p3.pdf is a Word document (validation read no file's start: S3)
    word = b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml" + bytes(40) + b"word/document.xml"
    fetch = kit.fetcher({"p3.pdf": word})
    ses = FakeSes(clock=clock)

    # WHEN the batch is sent
    result = run(items(3), ses, ledger, clock, fetch=fetch)

    # THEN p3.pdf's row failed, saying what the file is, and was given back for a later run;
    # the batch went on
    assert result.rows[1] == {
        "row": 3,
        "status": "failed",
        "code": "AttachmentNotPdf",
        "reason": "attachment is not a PDF: p3.pdf looks like a Word document (.docx, a PK"
        " zip), where a PDF starts with %PDF-: put the letter, saved as a PDF, in its place",
    }
    assert (result.sent, result.failed, len(ses.calls)) == (2, 1, 2)
    assert [o.state for o in ledger.outcomes(CID)] == ["sent", "released", "sent"]


def test_an_unreadable_attachment_is_a_passing_fault(ledger, clock):
    def fetch(name, tag):
        raise StorageError(f"attachments/{name}: read failed: connection reset")

    with pytest.raises(TransientSendError) as stopped:
        run(items(2), FakeSes(clock=clock), ledger, clock, fetch=fetch)

    assert "attachment unreadable" in stopped.value.message
    assert stopped.value.details["deferred"] == [2, 3]
    assert ledger.outcomes(CID)[0].state == "released"


def test_a_render_error_fails_only_its_row(ledger, clock):
    batch = items(2)
    del batch[0]["fields"]["Name"]

    result = run(batch, FakeSes(clock=clock), ledger, clock)

    assert [r["status"] for r in result.rows] == ["failed", "sent"]
    assert result.rows[0]["code"] == "TemplateError"
    assert "Name" in result.rows[0]["reason"]


def test_an_address_the_message_builder_refuses_fails_only_its_row(ledger, clock):
    batch = items(2)
    batch[0]["email"] = "zoë@example.com"

    result = run(batch, FakeSes(clock=clock), ledger, clock)

    assert [r["status"] for r in result.rows] == ["failed", "sent"]
    assert result.rows[0]["code"] == "PermanentSendError"
    assert "non-ASCII local part" in result.rows[0]["reason"]


def test_a_batch_stops_before_the_invocation_runs_out_of_time(ledger, clock):
    # GIVEN each send takes 10 s and the invocation has 45 s left
    ses = FakeSes({"latency_s": 10}, clock=clock, sleep=clock.sleep)

    with pytest.raises(TransientSendError) as stopped:
        run(items(4), ses, ledger, clock, deadline=clock.now + 45)

    # THEN it stops while 30 s remain, and the claims it made expire with the invocation
    assert stopped.value.details["deferred"] == [4, 5]
    assert stopped.value.details["result"]["sent"] == 2
    assert "time is nearly used up" in stopped.value.message


def test_claims_last_no_longer_than_the_invocation(ledger, clock):
    # GIVEN an invocation that dies mid-send 60 s before its deadline
    class Dies:
        def send(self, raw, *, sender, destinations, key=""):
            raise SystemExit("killed")

    with pytest.raises(SystemExit):
        run(items(1), Dies(), ledger, clock, attempt="execution-1", deadline=clock.now + 60)

    # THEN another execution may take the row over right after that deadline
    clock.sleep(61)
    result = run(items(1), FakeSes(clock=clock), ledger, clock, attempt="execution-2")
    assert result.rows[0]["takeover"] == "taken over from attempt execution-1"


def test_the_pacer_spaces_the_calls_and_waits_out_its_interval_at_the_end(ledger, clock):
    ses = FakeSes(clock=clock)
    pacer = Pacer(2, clock=clock, sleep=clock.sleep)

    run(items(3), ses, ledger, clock, pacer=pacer)

    assert [call.at - ses.calls[0].at for call in ses.calls] == [0.0, 0.5, 1.0]
    assert clock.now - ses.calls[-1].at == pytest.approx(0.5)


def test_core_logs_no_addresses(ledger, clock, caplog):
    caplog.set_level(logging.DEBUG, logger="mailmatrix")
    ses = FakeSes(fail_calls(1), clock=clock)
    fetch = kit.fetcher({"p2.pdf": b"%PDF-1.4"}, default=None)

    run(items(2), ses, ledger, clock, fetch=fetch)

    assert caplog.records
    assert "@" not in caplog.text


def test_sizes_read_as_mebibytes():
    assert format_size(10 * 1024 * 1024) == "10 MiB"
    assert format_size(11_481_000) == "10.95 MiB"


class Scripted:
    """A mailer that raises the given errors in turn, then accepts."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = 0

    def send(self, raw, *, sender, destinations, key=""):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return f"id-{self.calls}"


def test_other_mailers_errors_follow_their_retryable_flag(ledger, clock):
    class PassingFault(SendError):
        retryable = True

    refusal = PassingFault("smtp: 421 try later", refused=True)  # an answer: nothing went out
    mailer = Scripted(refusal, SendError("smtp: 550 no such user"))

    result = run(items(2), mailer, ledger, clock)

    # row 2: the passing fault is retried, then the 550 fails the row; row 3 goes out
    assert result.to_dict()["rows"] == [
        {"row": 2, "status": "failed", "code": "SendError", "reason": "smtp: 550 no such user"},
        {"row": 3, "status": "sent", "message_id": "id-3"},
    ]
    assert len(clock.slept) == 1


def test_a_batch_within_the_hold_says_what_halted_it_and_leaves_when_to_the_advice(ledger, clock):
    ledger.halt(CID, code="Throttling", reason="Daily message quota exceeded.", attempt="x")
    clock.sleep(15)

    with pytest.raises(AccountSendingHalted) as halted:
        run(items(1), Scripted(), ledger, clock)

    # (a "redrive in 45 s" here contradicted the advice to wait for the 24-hour quota)
    assert halted.value.message == (
        f"send_batch: campaign {CID} halted 15 s ago by an earlier batch: Daily message quota"
        " exceeded. (a halt holds the campaign's batches for 60 s; a redrive lifts it at once)"
    )
    assert halted.value.details["attempt"] == "x"


def test_on_a_stack_a_batch_within_the_hold_does_not_say_a_redrive_lifts_it(ledger, clock):
    # GIVEN a campaign validated on a stack (its commands are `aws send`'s), halted 15 s ago
    campaign = {**kit.campaign(), "run_again_command": "mailmatrix aws send a.csv --stack mm"}
    ledger.halt(CID, code="Throttling", reason="Daily message quota exceeded.", attempt="x")
    clock.sleep(15)

    with pytest.raises(AccountSendingHalted) as halted:
        run(items(1), Scripted(), ledger, clock, campaign=campaign)

    # THEN it says that a redrive within the hold stops the same way (no command there lifts
    # a halt, as the local `mailmatrix redrive` does)
    assert halted.value.message.endswith(
        "(a halt holds the campaign's batches for 60 s; a redrive within it stops here too)"
    )


def test_a_template_error_fails_the_row_now_but_not_for_good(ledger, clock):
    # GIVEN templates that cannot render (a setup problem, not the recipient's)
    from mailmatrix.errors import TemplateError

    def broken(item, campaign, **kwargs):
        raise TemplateError("offer/subject.txt: the subject is empty")

    ses = FakeSes(clock=clock)

    # WHEN the batch runs THEN the row fails with the reason, and nothing is sent
    result = run(items(1), ses, ledger, clock, composer=broken)
    assert [(r["status"], r["code"]) for r in result.rows] == [("failed", "TemplateError")]
    assert ses.calls == []

    # AND once the templates are fixed, the next run sends it (the ledger did not settle it)
    fixed = run(items(1), ses, ledger, clock)
    assert [r["status"] for r in fixed.rows] == ["sent"]


class _CountingLedger:
    """The SQLite ledger, counting its write transactions (claims, records)."""

    def __init__(self, inner: SqliteLedger) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def claim(self, key, **kwargs):
        self.writes.append("claim+sent" if kwargs.get("sent_before") else "claim")
        return self.inner.claim(key, **kwargs)

    def record_sent(self, key, *, message_id, uncertain=False, **more):
        self.writes.append("record_sent")
        self.inner.record_sent(key, message_id=message_id, uncertain=uncertain, **more)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_each_sent_row_costs_one_ledger_write_the_next_claim_records_it(ledger, clock):
    counting = _CountingLedger(ledger)
    result = run(items(4), FakeSes(), counting, clock)
    assert result.sent == 4
    # row 2 claimed alone, rows 3-5 claimed with the row before recorded, row 5 at the end
    assert counting.writes == ["claim", "claim+sent", "claim+sent", "claim+sent", "record_sent"]
    assert [o.state for o in ledger.outcomes(CID)] == ["sent"] * 4


def test_a_rows_own_file_is_kept_with_its_letter_in_the_same_writes(ledger, clock):
    # GIVEN three rows naming their own files, of one size, and a fourth given its set's
    # default_attachment (a file for many: not its own)
    files = {f"p{row}.pdf": b"%PDF-" + bytes([row]) * 19_995 for row in range(2, 5)}
    batch = items(4)
    for item in batch[:3]:
        item["own_attachment"] = True
    batch[3]["attachment"] = "brochure.pdf"
    counting = _CountingLedger(ledger)
    campaign = kit.campaign(source={"bucket": "local", "key": "incoming/offers.csv"})

    # WHEN sent
    result = run(batch, FakeSes(), counting, clock, fetch=kit.fetcher(files), campaign=campaign)

    # THEN no write more than before: each letter's file goes with its record
    assert result.sent == 4
    assert counting.writes == ["claim", "claim+sent", "claim+sent", "claim+sent", "record_sent"]
    # AND each file is found by its size and print, with its SHA-256 and owner
    for row in range(2, 5):
        data, email = files[f"p{row}.pdf"], f"person{row}@example.com"
        found = list(ledger.sent_copies(len(data), sample_print(data)))
        assert [copy._replace(at=0.0) for copy in found] == [
            SentCopy(
                CID,
                f"p{row}.pdf",
                recipient_key(CID, email),
                row,
                mask(email),
                hashlib.sha256(data).hexdigest(),
                "offers.csv",
                0.0,
                SENT,
            )
        ]
    # AND the default_attachment is kept as no one's
    default = kit.fetcher()("brochure.pdf", None)
    assert list(ledger.sent_copies(len(default), sample_print(default))) == []


def test_rows_sent_before_a_crash_are_recorded_the_row_in_flight_stays_claimed(ledger, clock):
    class Crash(BaseException):
        """A process killed in the middle of a send."""

    class CrashOnThird(FakeSes):
        sends = 0

        def send(self, raw, *, sender, destinations, key=""):
            self.sends += 1
            if self.sends == 3:
                raise Crash
            return super().send(raw, sender=sender, destinations=destinations)

    with pytest.raises(Crash):
        run(items(4), CrashOnThird(), ledger, clock)
    states = [(o.row, o.state) for o in ledger.outcomes(CID)]
    assert states == [(2, "sent"), (3, "sent"), (4, "claimed")]


def _own(item: dict) -> dict:
    """``item`` naming its recipient's own file."""
    item["own_attachment"] = True
    return item


def _copies_of(ledger, data: bytes) -> list[tuple[int, str]]:
    """The rows and SHA-256s of the letters sent_copies finds carrying ``data``."""
    return [(c.row, c.sha256) for c in ledger.sent_copies(len(data), sample_print(data))]


def test_a_letter_failed_in_doubt_before_composing_keeps_its_file(ledger, clock):
    # GIVEN row 2, naming its own file, claimed by two attempts in turn that died holding it
    # (each may have sent it: their files were never recorded)
    data = b"%PDF-1.4 anna" * 2000
    item = _own(items(1)[0])
    owner = ("p2.pdf", recipient_key(CID, item["email"]), mask(item["email"]))
    for attempt in ("child-1", "child-2"):
        lease = clock.now + 1
        ledger.claim(
            item["key"], campaign=CID, row=2, attempt=attempt, lease_until=lease, owner=owner
        )
        clock.sleep(2)

    # WHEN a third attempt comes to it and fails it as OutcomeUnknown, sending nothing
    fetch = kit.fetcher({"p2.pdf": data})
    result = run([item], FakeSes(clock=clock), ledger, clock, attempt="child-3", fetch=fetch)
    assert result.rows[0]["code"] == "OutcomeUnknown"

    # THEN the file those attempts may have sent is kept with the letter, for validation
    assert _copies_of(ledger, data) == [(2, hashlib.sha256(data).hexdigest())]


def test_a_letter_released_in_doubt_keeps_its_file(ledger, clock):
    # GIVEN a service that may take row 2's message and fails to answer, on every try
    data = b"%PDF-1.4 anna" * 2000
    timeout = {"Code": "InternalFailure", "Message": "no reply", "HTTPStatusCode": 500}
    ses = FakeSes({"by_destination": {"person2@example.com": timeout}}, clock=clock)
    policy = RetryPolicy(tries=3, unknown_tries=10)

    # WHEN the batch gives the row back for a later retry
    with pytest.raises(TransientSendError):
        run(
            [_own(items(1)[0])],
            ses,
            ledger,
            clock,
            policy=policy,
            fetch=kit.fetcher({"p2.pdf": data}),
        )

    # THEN the file its tries may have carried out is kept with the letter
    assert [(o.state, o.doubtful) for o in ledger.outcomes(CID)] == [("released", True)]
    assert _copies_of(ledger, data) == [(2, hashlib.sha256(data).hexdigest())]


class _SlowSes(FakeSes):
    """Sends that take 0.1 s each; ``during_second`` runs while the second one does."""

    def __init__(self, clock, during_second) -> None:
        super().__init__(clock=clock)  # kept as self.clock
        self.during_second, self.sends = during_second, 0

    def send(self, raw, *, sender, destinations, key=""):
        self.sends += 1
        self.clock.now += 0.1
        if self.sends == 2:
            self.during_second()
        return super().send(raw, sender=sender, destinations=destinations)


def test_a_halt_recorded_by_another_batch_stops_this_one_at_its_next_lookup(ledger, clock):
    # GIVEN sends that take 0.1 s each, and a sibling batch recording a halt during send 2
    mailer = _SlowSes(
        clock,
        lambda: ledger.halt(CID, code="Throttling", reason="Daily quota", attempt="sibling"),
    )
    # WHEN this batch of 6 rows runs, looking for a halt every 0.25 s
    with pytest.raises(AccountSendingHalted) as stopped:
        run(items(6), mailer, ledger, clock, policy=RetryPolicy(halt_check_s=0.25))
    # THEN rows 3 and 4 (at 0.1 and 0.2 s) go without a lookup; the lookup before row 5
    # (0.3 s) finds the halt, and rows 5-7 are left for a later attempt
    assert mailer.sends == 3
    assert stopped.value.details["deferred"] == [5, 6, 7]
    assert "halted just now by an earlier batch: Daily quota" in stopped.value.message


@pytest.mark.parametrize(
    ("code", "status", "flagged"),
    [("InternalFailure", 500, True), ("Throttling", 400, False)],
)
def test_a_row_released_after_tries_that_may_have_arrived_is_flagged_when_sent_later(
    ledger, clock, code, status, flagged
):
    # GIVEN row 3's five tries all fail: a server error (the service may have accepted the
    # message before failing) or a throttle (refused for sure)
    person = "person3@example.com"
    error = {"Code": code, "Message": "Maximum sending rate exceeded.", "HTTPStatusCode": status}
    first = FakeSes({"by_destination": {person: error}}, clock=clock)
    with pytest.raises((TransientSendError, Throttled)):
        run(items(2), first, ledger, clock, attempt="child-1", policy=RetryPolicy(unknown_tries=9))
    # WHEN a later attempt (another execution) sends the row
    result = run(items(2), FakeSes(clock=clock), ledger, clock, attempt="child-2")
    row3 = next(row for row in result.rows if row["row"] == 3)
    assert row3["status"] == "sent"
    # THEN it is reported as a possible duplicate only after tries whose outcome is unknown
    if flagged:
        assert "may have been accepted" in row3["takeover"]
    else:
        assert "takeover" not in row3


def test_a_batch_of_long_refusals_fits_in_a_state_result(ledger, clock):
    # GIVEN a server refusing every recipient of a batch of 100 with a 3 KB, multi-line reply
    refusal = {"Code": "MessageRejected", "Message": "550 no such mailbox\n" * 150}
    ses = FakeSes({"all_destinations": refusal}, clock=clock)
    result = run(items(100), ses, ledger, clock).to_dict()
    # THEN every row is reported failed, and the result stays far below the 256 KiB limit
    assert result["failed"] == 100
    assert len(json.dumps(result).encode()) < 100 * 1024
    assert all(len(row["reason"]) <= 500 for row in result["rows"])
    assert result["rows"][0]["reason"].startswith("fake-ses: MessageRejected: 550 no such")
    # AND the ledger keeps each whole reason
    assert len(ledger.outcomes(CID)[0].reason) > 3000


def test_a_second_invocation_of_an_attempt_sends_nothing_while_the_first_holds_the_batch(
    ledger, clock
):
    # GIVEN a first invocation of child-1 still sending its batch (a Lambda whose reply was
    # lost, or one an abort left running before a redrive)
    ledger.begin_batch("child-1", invocation="req-1", until=clock.now + 900)
    ses = FakeSes(clock=clock)

    # WHEN a retry of the same child runs
    with pytest.raises(ClaimBusy) as raised:
        run(items(3), ses, ledger, clock, invocation="req-2")

    # THEN it sends nothing and leaves every row for later
    assert ses.calls == []
    assert raised.value.details["deferred"] == [2, 3, 4]
    assert ledger.outcomes(CID) == []

    # WHEN the first has ended THEN the retry sends the batch, and lets go of it at the end
    ledger.end_batch("child-1", invocation="req-1")
    assert run(items(3), ses, ledger, clock, invocation="req-2").sent == 3
    assert ledger.begin_batch("child-1", invocation="req-3", until=clock.now + 900) is None


def test_rows_held_by_another_live_attempt_are_left_with_claim_busy(ledger, clock):
    ledger.claim(items(1)[0]["key"], campaign=CID, row=2, attempt="child-9")
    ses = FakeSes(clock=clock)

    with pytest.raises(ClaimBusy) as raised:
        run(items(2), ses, ledger, clock)

    assert raised.value.details["deferred"] == [2]
    assert len(ses.accepted) == 1


@pytest.mark.parametrize(
    "sender",
    ["Acme Talent <talent@example.com>", "hr@globex.example", "Büro <a@bücher.example>"],
    ids=["example.com", "example-tld", "idn"],
)
def test_a_sender_the_demo_and_tests_use_is_accepted(sender):
    assert sender_problem(sender) is None


@pytest.mark.parametrize(
    "address",
    ["talent@mail.test", "talent@acme.invalid", "talent@box.localhost", "talent@printer.local"],
)
def test_a_sender_at_a_special_use_domain_is_refused_as_a_recipient_there_would_be(address):
    # GIVEN an address that validation refuses as a recipient
    refused = parse_address(address).problem
    assert refused is not None

    # THEN the same address as sender is refused for the same reason, name or not
    assert sender_problem(f"Acme <{address}>") == f"sender: {address!r}: {refused}"


def test_a_sender_that_is_no_address_says_so():
    assert sender_problem("not an address") == "sender: not an email address: 'not an address'"


def _upload(name: str, order: str, execution: str = "exec-new") -> Upload:
    return Upload(CID, upload=name, order=order, execution=execution)


def test_a_batch_of_an_upload_no_longer_the_latest_sends_nothing_and_says_whose_it_is(
    ledger, clock
):
    # GIVEN a newer upload of the file validated (execution exec-new) than this batch's
    ledger.record_upload(_upload("v2", "0002", "arn:aws:states:r:1:execution:sm:exec-new"))
    ses = FakeSes(clock=clock)

    # WHEN a batch of the older upload runs
    result = run(items(3), ses, ledger, clock, campaign=kit.campaign(upload="v1"))

    # THEN it ends normally having sent nothing, every row Superseded naming that execution,
    # and nothing is written to the ledger for them (the newer execution sends them)
    assert ses.calls == []
    assert [(r["row"], r["status"], r["code"]) for r in result.rows] == [
        (2, "failed", "Superseded"),
        (3, "failed", "Superseded"),
        (4, "failed", "Superseded"),
    ]
    assert (
        "a newer upload of this file was validated (execution exec-new)"
        in (result.rows[0]["reason"])
    )
    assert ledger.outcomes(CID) == []


def test_a_batch_of_the_latest_upload_sends(ledger, clock):
    ledger.record_upload(_upload("v2", "0002"))
    latest = kit.campaign(upload="v2")
    assert run(items(2), FakeSes(clock=clock), ledger, clock, campaign=latest).sent == 2


def test_a_batch_validated_before_uploads_were_recorded_yields_to_any_recorded(ledger, clock):
    # GIVEN a campaign object without its upload (an execution from before), and one recorded
    ledger.record_upload(_upload("v2", "0002"))
    # WHEN its batch runs (a redrive) THEN it sends nothing
    result = run(items(2), FakeSes(clock=clock), ledger, clock)
    assert {r["code"] for r in result.rows} == {"Superseded"}


def test_a_batch_stops_at_its_next_lookup_once_a_newer_upload_is_validated(ledger, clock):
    # GIVEN sends that take 0.1 s each, and the newer upload validated during send 2
    ledger.record_upload(_upload("v1", "0001", "exec-old"))
    mailer = _SlowSes(clock, lambda: ledger.record_upload(_upload("v2", "0002")))
    # WHEN this batch of 6 rows runs, looking every 0.25 s
    result = run(
        items(6),
        mailer,
        ledger,
        clock,
        campaign=kit.campaign(upload="v1"),
        policy=RetryPolicy(halt_check_s=0.25),
    )
    # THEN the rows sent before the lookup that found it stay sent, the rest are Superseded
    assert mailer.sends == 3
    assert [r["status"] for r in result.rows] == ["sent"] * 3 + ["failed"] * 3
    assert [o.row for o in ledger.outcomes(CID)] == [2, 3, 4]


def test_a_superseded_retry_reports_the_rows_its_earlier_try_sent_as_sent(ledger, clock):
    # GIVEN a try of this child that sent two rows, then failed (a Lambda timeout)
    ledger.record_upload(_upload("v1", "0001", "exec-old"))
    ses = FakeSes(clock=clock)
    run(items(2), ses, ledger, clock, campaign=kit.campaign(upload="v1"))
    # AND a newer upload validated since
    ledger.record_upload(_upload("v2", "0002"))

    # WHEN the child's batch of four runs again (its retry, or a redrive)
    result = run(items(4), ses, ledger, clock, campaign=kit.campaign(upload="v1"))

    # THEN the two it sent are reported sent, the other two Superseded, nothing sent again
    assert [(r["status"], r.get("earlier")) for r in result.rows] == [
        ("sent", True),
        ("sent", True),
        ("failed", None),
        ("failed", None),
    ]
    assert len(ses.calls) == 2


def test_a_row_left_for_a_retry_is_superseded_too_and_the_batch_ends(ledger, clock):
    # GIVEN a service refusing the first row for now on each of its tries, and a newer upload
    # validated meanwhile
    ledger.record_upload(_upload("v1", "0001", "exec-old"))

    class Refusing:
        calls = 0

        def send(self, raw, *, sender, destinations, key=""):
            self.calls += 1
            if self.calls == 5:
                ledger.record_upload(_upload("v2", "0002"))
            raise TransientSendError("smtp: 451 try later", refused=True)

    # WHEN the batch runs THEN it does not ask for a retry: the row it left is Superseded too
    result = run(items(3), Refusing(), ledger, clock, campaign=kit.campaign(upload="v1"))
    assert [(r["row"], r["code"]) for r in result.rows] == [
        (2, "Superseded"),
        (3, "Superseded"),
        (4, "Superseded"),
    ]


def test_the_refusal_of_a_renamed_set_names_it_and_both_ways_out():
    error = template_sets_changed("incoming/offers.csv", ["offer", "rejection"], scope="this run")

    assert error.message == (
        "offers.csv: earlier runs of this file sent letters of the template set(s) 'offer',"
        " 'rejection', which the templates no longer have (renamed or removed?). The ledger"
        " knows each letter by its set's name, so under another name every one of them would"
        " be sent again: this run sends nothing. Put the set(s) back under the same name(s)"
        " (new sets may be added beside them) and run again; or, to mail everyone again on"
        " purpose, send the file under a new file name (a new campaign) with --send-again-from"
        " and this file's name"
    )
    assert error.details == {"code": "TemplateSetsChanged", "missing": ["offer", "rejection"]}
    # AND the one set of templates without a manifest is named as the operator knows it
    default = template_sets_changed("offers.csv", ["default"], scope="this batch")
    assert "set(s) 'default' (the one set of a templates folder without manifest.yaml)," in (
        default.message
    )
    assert "this batch sends nothing" in default.message


def test_a_batch_whose_templates_lost_a_set_the_campaign_used_sends_nothing(ledger, clock):
    # GIVEN a campaign whose earlier run sent letters of its one set (default)
    assert ledger.record_template_sets(CID, {"default"}, catalog=["default"]) == []
    ses = FakeSes(clock=clock)

    # WHEN a batch of it (a redrive, say) runs with templates that have other sets only
    with pytest.raises(TemplateSetsChanged, match="'default'") as refused:
        run(items(3), ses, ledger, clock, catalog=load_catalog(TWO_SETS), invocation="req-1")

    # THEN nothing was sent, no row was claimed, and the batch is not held
    assert ses.calls == []
    assert ledger.outcomes(CID) == []
    assert ledger.begin_batch("child-1", invocation="req-2", until=clock() + 60) is None
    assert refused.value.details["missing"] == ["default"]

    # WHEN the set is back THEN the batch sends its rows
    assert run(items(3), ses, ledger, clock).sent == 3


def test_a_batchs_checks_of_its_campaign_are_one_ledger_read(ledger, clock):
    # GIVEN a ledger that notes which of its reads of a campaign are made
    campaign_reads = {"campaign_status", "halted", "latest_upload", "template_sets"}

    class Noting:
        def __init__(self) -> None:
            self.reads: list[str] = []

        def __getattr__(self, name):
            if name in campaign_reads:
                self.reads.append(name)
            return getattr(ledger, name)

    noting = Noting()

    # WHEN a batch of 3 rows runs, looking up its campaign at most every 10 s
    run(items(3), FakeSes(clock=clock), noting, clock, policy=RetryPolicy(halt_check_s=10))

    # THEN halt, latest upload and template sets were checked in one read
    assert noting.reads == ["campaign_status"]


def test_a_superseded_batch_whose_templates_lost_a_set_is_superseded(ledger, clock):
    # GIVEN a newer upload validated, and a set the campaign used missing from the templates
    assert ledger.record_template_sets(CID, {"default"}, catalog=["default"]) == []
    ledger.record_upload(_upload("v2", "0002"))

    # WHEN a batch of the older upload runs THEN its rows are left to the newer execution
    result = run(
        items(2),
        FakeSes(clock=clock),
        ledger,
        clock,
        campaign=kit.campaign(upload="v1"),
        catalog=load_catalog(TWO_SETS),
    )
    assert {r["code"] for r in result.rows} == {"Superseded"}


class RefusesRows:
    """A mailer whose answer to each row (by its recipient) is scripted: an error raised on
    every try of that row, or none (the row is taken)."""

    def __init__(self, **refusals: SendError) -> None:
        self.refusals = refusals
        self.calls: list[str] = []

    def send(self, raw, *, sender, destinations, key=""):
        recipient = destinations[0].split("@")[0]
        self.calls.append(recipient)
        if recipient in self.refusals:
            raise self.refusals[recipient]
        return f"id-{len(self.calls)}"


def _not_now() -> TransientSendError:
    return TransientSendError("smtp: 450 4.3.2 Service currently unavailable", refused=True)


def test_a_service_that_refuses_every_try_of_three_rows_in_a_row_halts_the_campaign(ledger, clock):
    # GIVEN a server answering "not now" to every try of every row (greylisting, paused)
    policy = RetryPolicy(tries=3)
    mailer = RefusesRows(**{f"person{row}": _not_now() for row in range(2, 12)})
    first, sibling = items(10)[:8], items(10)[8:]

    # WHEN a batch of 8 rows runs
    with pytest.raises(AccountSendingHalted) as halted:
        run(first, mailer, ledger, clock, policy=policy)

    # THEN it stops at the third row refused in a row, not after trying all eight: 3 x 3 tries
    assert mailer.calls == ["person2"] * 3 + ["person3"] * 3 + ["person4"] * 3
    assert halted.value.details["code"] == "ServiceRefusing"
    assert halted.value.message == (
        "send_batch: row 4: the mail service refused every try of 3 rows in a row: it takes no"
        " mail now (the last reply: smtp: 450 4.3.2 Service currently unavailable)"
    )
    assert halted.value.details["deferred"] == [4, 5, 6, 7, 8, 9]
    assert [r["status"] for r in halted.value.details["result"]["rows"]] == ["deferred"] * 2
    # AND the campaign is halted, so another batch stops before asking the server at all
    assert ledger.campaign_status(CID).halt.code == "ServiceRefusing"
    with pytest.raises(AccountSendingHalted):
        run(sibling, mailer, ledger, clock, attempt="child-2", policy=policy)
    assert len(mailer.calls) == 9
    # AND nothing was recorded sent or failed for good: a redrive sends every row
    assert {o.state for o in ledger.outcomes(CID)} == {"released"}


def test_a_row_taken_between_refusals_starts_the_count_again(ledger, clock):
    # GIVEN refusals of rows 2, 3, 5, 6 (row 4 is taken) and of rows 8, 9 (row 7 is refused
    # for good, an answer about that recipient)
    refusals: dict[str, SendError] = {f"person{row}": _not_now() for row in (2, 3, 5, 6, 8, 9)}
    refusals["person7"] = PermanentSendError("smtp: 550 5.1.1 no such user")
    mailer = RefusesRows(**refusals)

    # WHEN the batch runs
    with pytest.raises(TransientSendError) as deferred:
        run(items(8), mailer, ledger, clock, policy=RetryPolicy(tries=2))

    # THEN no halt: never three refused rows in a row; the refused rows wait for a retry
    assert type(deferred.value) is TransientSendError
    assert deferred.value.details["deferred"] == [2, 3, 5, 6, 8, 9]
    assert ledger.campaign_status(CID).halt is None


@pytest.mark.parametrize(
    "fault",
    [
        TransientSendError("smtp: 450 4.2.1 mailbox busy", refused=True, recipient=True),
        TransientSendError("smtp: connection lost while awaiting the reply"),  # may be taken
    ],
    ids=["about-the-recipient", "unknown-outcome"],
)
def test_faults_that_say_nothing_of_the_service_taking_mail_never_halt_it(ledger, clock, fault):
    # GIVEN every row meets a fault that is about its recipient, or not a refusal
    mailer = RefusesRows(**{f"person{row}": fault for row in range(2, 8)})

    # WHEN a batch of six rows runs (unknown outcomes allowed as often as tries)
    with pytest.raises(TransientSendError) as deferred:
        run(items(6), mailer, ledger, clock, policy=RetryPolicy(tries=2, unknown_tries=10))

    # THEN every row was tried, each waits for a retry, and the campaign is not halted
    assert type(deferred.value) is TransientSendError
    assert len(mailer.calls) == 12
    assert deferred.value.details["deferred"] == [2, 3, 4, 5, 6, 7]
    assert ledger.campaign_status(CID).halt is None


@pytest.mark.parametrize(("size", "halts"), [(1, False), (2, True)])
def test_a_batch_smaller_than_the_refusing_rows_halts_when_all_its_rows_are_refused(
    ledger, clock, size, halts
):
    # GIVEN batches of one or two rows (--batch-size), a server refusing every try of each
    mailer = RefusesRows(**{f"person{row}": _not_now() for row in range(2, 4)})

    # WHEN one batch runs
    with pytest.raises(TransientSendError if not halts else AccountSendingHalted) as stopped:
        run(items(size), mailer, ledger, clock, policy=RetryPolicy(tries=2))

    # THEN two refused rows halt the campaign; one alone (one recipient greylisted) does not
    assert type(stopped.value) is (AccountSendingHalted if halts else TransientSendError)
    assert (ledger.campaign_status(CID).halt is not None) is halts


def test_rows_refused_for_their_recipients_neither_count_nor_restart_the_refusals(ledger, clock):
    # GIVEN a server that answers "not now" to every row but those whose mailbox is full,
    # which it refuses for that reason (rows 3 and 5)
    full = TransientSendError("smtp: 450 4.2.2 Mailbox full", refused=True, recipient=True)
    refusals = {f"person{row}": _not_now() for row in range(2, 10)}
    refusals.update(person3=full, person5=full)
    mailer = RefusesRows(**refusals)

    # WHEN a batch of eight rows runs
    with pytest.raises(AccountSendingHalted) as halted:
        run(items(8), mailer, ledger, clock, policy=RetryPolicy(tries=2))

    # THEN the third row the server refused as a whole (row 6) halts the campaign: the full
    # mailboxes between them said nothing of its taking mail
    assert halted.value.message.startswith("send_batch: row 6: the mail service refused")
    assert halted.value.details["deferred"] == [6, 7, 8, 9]


def test_rows_a_relay_refuses_alike_fail_but_not_for_good(ledger, clock):
    # GIVEN a server that does not relay this sender's mail: every RCPT refused for good alike
    denied = PermanentSendError("smtp: 554 5.7.1 Relay access denied", alike=True)
    mailer = RefusesRows(**{f"person{row}": denied for row in range(2, 12)})

    # WHEN a batch of ten rows runs
    result = run(items(10), mailer, ledger, clock)

    # THEN each row is tried once and fails, none for good: the run after the fix (a login,
    # the right server) sends them without --retry-failed; the campaign is not halted (a
    # server may relay for some domains only, and a halt would hold back those it takes)
    assert len(mailer.calls) == 10
    assert [r["status"] for r in result.rows] == ["failed"] * 10
    assert {o.state for o in ledger.outcomes(CID)} == {"released"}
    assert ledger.campaign_status(CID).halt is None
    assert run(items(10), RefusesRows(), ledger, clock).sent == 10


def test_a_relay_refusal_between_sent_rows_fails_its_row_only(ledger, clock):
    # GIVEN rows 3 and 5 refused alike, the others taken (a relay for some domains only)
    denied = PermanentSendError("smtp: 554 5.7.1 Relay access denied", alike=True)
    mailer = RefusesRows(person3=denied, person5=denied)

    # WHEN the batch runs
    result = run(items(5), mailer, ledger, clock)

    # THEN those two fail, not for good, and the campaign goes on
    assert [r["status"] for r in result.rows] == ["sent", "failed", "sent", "failed", "sent"]
    assert [o.state for o in ledger.outcomes(CID)][1::2] == ["released", "released"]
    assert ledger.campaign_status(CID).halt is None


def _unanswered() -> TransientSendError:
    """A fault after the message was handed over: the service may have taken it."""
    return TransientSendError("smtp: connection lost during the reply to the message")


def test_a_service_taking_two_rows_in_a_row_without_answering_halts_the_campaign(ledger, clock):
    # GIVEN a server that takes every message and then drops the connection (no reply)
    mailer = RefusesRows(**{f"person{row}": _unanswered() for row in range(2, 12)})
    first, sibling = items(10)[:6], items(10)[6:]

    # WHEN a batch of 6 rows runs
    with pytest.raises(AccountSendingHalted) as halted:
        run(first, mailer, ledger, clock)

    # THEN the first row is tried twice (one lost reply may be a passing fault), the second
    # once only, and the batch stops there: three possible copies, not two for every row
    assert mailer.calls == ["person2", "person2", "person3"]
    assert halted.value.details["code"] == "OutcomesUnknown"
    assert halted.value.message == (
        "send_batch: row 3: the mail service confirmed no try of 2 rows in a row: it may take"
        " messages without confirming them (rows 2 and 3 failed as OutcomeUnknown: they may"
        " have arrived; the last error: smtp: connection lost during the reply to the message)"
    )
    # AND both rows are failed in doubt, each saying why; the rest wait for a redrive
    failed = halted.value.details["result"]["rows"]
    assert [(r["row"], r["code"]) for r in failed] == [(2, "OutcomeUnknown"), (3, "OutcomeUnknown")]
    assert failed[1]["reason"].startswith(
        "the service may have taken the message without answering, as it did row 2 just before"
    )
    assert halted.value.details["deferred"] == [4, 5, 6, 7]
    assert [(o.row, o.state, o.doubtful) for o in ledger.outcomes(CID)] == [
        (2, "failed", True),
        (3, "failed", True),
    ]
    # AND the campaign is halted: another batch stops before asking the server at all
    assert ledger.campaign_status(CID).halt.code == "OutcomesUnknown"
    with pytest.raises(AccountSendingHalted):
        run(sibling, mailer, ledger, clock, attempt="child-2")
    assert len(mailer.calls) == 3


def test_batches_of_one_row_taken_without_answers_halt_the_campaign_as_one_batch_would(
    ledger, clock
):
    # GIVEN a server that takes every message and then drops the connection (no reply), and
    # a campaign sent in batches of one row each (--batch-size 1), one after the other
    mailer = RefusesRows(**{f"person{row}": _unanswered() for row in range(2, 8)})
    batches = [[item] for item in items(6)]

    # WHEN the batches run
    first = run(batches[0], mailer, ledger, clock, attempt="child-1")
    with pytest.raises(AccountSendingHalted) as halted:
        run(batches[1], mailer, ledger, clock, attempt="child-2")
    with pytest.raises(AccountSendingHalted):
        run(batches[2], mailer, ledger, clock, attempt="child-3")

    # THEN the rows in a row unanswered are counted across batches: the first row is tried
    # twice, the second once, and the second batch halts the campaign: three possible
    # copies, not two for every row
    assert [(r["row"], r["code"]) for r in first.rows] == [(2, "OutcomeUnknown")]
    assert mailer.calls == ["person2", "person2", "person3"]
    assert halted.value.details["code"] == "OutcomesUnknown"
    assert "rows 2 and 3 failed as OutcomeUnknown" in halted.value.message
    # AND the count starts afresh after the halt (a redrive, once the server is mended)
    assert ledger.campaign_status(CID).unanswered is None


def test_a_row_answered_in_another_batch_ends_the_rows_in_a_row_unanswered(ledger, clock):
    # GIVEN lost replies to every try of rows 2 and 4; row 3 is taken; one row per batch
    mailer = RefusesRows(person2=_unanswered(), person4=_unanswered())
    batches = [[item] for item in items(3)]

    # WHEN the three batches run one after the other
    results = [
        run(batch, mailer, ledger, clock, attempt=f"child-{n}") for n, batch in enumerate(batches)
    ]

    # THEN row 3's answer ended the count: row 4 is tried twice as row 2 was, and no halt
    assert mailer.calls == ["person2", "person2", "person3", "person4", "person4"]
    assert [result.rows[0]["status"] for result in results] == ["failed", "sent", "failed"]
    assert ledger.campaign_status(CID).halt is None
    assert ledger.campaign_status(CID).unanswered.rows == (4,)


def test_a_stop_while_a_try_waits_for_its_answer_sends_nothing_more(ledger, clock):
    # GIVEN a server that takes row 2 without answering, after a wait (its timeout) during
    # which the operator stops the run
    stop = _operator_stop(ledger)

    class StoppedWhileWaiting(RefusesRows):
        def send(self, raw, *, sender, destinations, key=""):
            if not self.calls:
                clock.sleep(30)
                stop()
            return super().send(raw, sender=sender, destinations=destinations)

    mailer = StoppedWhileWaiting(person2=_unanswered())

    # WHEN the batch runs
    with pytest.raises(AccountSendingHalted) as stopped:
        run(items(3), mailer, ledger, clock)

    # THEN the row is not tried again after the stop: failed in doubt, for a person to check,
    # the stop (not replaced by another halt) saying why the rest are unsent
    assert mailer.calls == ["person2"]
    assert stopped.value.details["code"] == "StoppedByOperator"
    assert stopped.value.details["deferred"] == [3, 4]
    (failed,) = stopped.value.details["result"]["rows"]
    assert (failed["row"], failed["code"]) == (2, "OutcomeUnknown")
    assert failed["reason"].startswith(
        "the service may have taken the message without answering (last: smtp: connection lost"
        " during the reply to the message), and the campaign was halted before another try"
        " (StoppedByOperator); not sent again"
    )
    assert [(o.row, o.state, o.doubtful) for o in ledger.outcomes(CID)] == [(2, "failed", True)]
    assert ledger.campaign_status(CID).halt.code == "StoppedByOperator"
    # AND the redrive sends the rest, not that row
    ledger.clear_halt(CID)
    result = run(items(3), mailer, ledger, clock, attempt="child-1-redrive")
    assert mailer.calls == ["person2", "person3", "person4"]
    assert [(r["row"], r["status"], r.get("code")) for r in result.rows] == [
        (2, "failed", "OutcomeUnknown"),
        (3, "sent", None),
        (4, "sent", None),
    ]


def test_unknown_outcomes_apart_are_each_tried_twice_and_never_halt(ledger, clock):
    # GIVEN lost replies to every try of rows 2 and 5, and to the first try of row 4, whose
    # second try the server refuses for good (an answer); rows 3 and 6 are taken
    class LostReplies:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def send(self, raw, *, sender, destinations, key=""):
            recipient = destinations[0].split("@")[0]
            self.calls.append(recipient)
            first = self.calls.count(recipient) == 1
            if recipient in ("person2", "person5") or (recipient == "person4" and first):
                raise _unanswered()
            if recipient == "person4":
                raise PermanentSendError("smtp: 550 5.1.1 no such user")
            return f"id-{len(self.calls)}"

    mailer = LostReplies()

    # WHEN a batch of 5 rows runs
    result = run(items(5), mailer, ledger, clock)

    # THEN each row in doubt was tried twice, as before this halt, and the batch ended: no two
    # rows in a row went unanswered (row 4's last try was)
    assert mailer.calls == ["person2"] * 2 + ["person3"] + ["person4"] * 2 + ["person5"] * 2 + [
        "person6"
    ]
    assert [(r["row"], r["status"], r.get("code")) for r in result.rows] == [
        (2, "failed", "OutcomeUnknown"),
        (3, "sent", None),
        (4, "failed", "OutcomeUnknown"),
        (5, "failed", "OutcomeUnknown"),
        (6, "sent", None),
    ]
    assert ledger.campaign_status(CID).halt is None


def _stop_at_nap(clock: kit.FakeClock, nap: int, stop) -> list[float]:
    """Make the batch's sleeps (naps) run ``stop()`` during the ``nap``-th; return the naps."""
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        kit.FakeClock.sleep(clock, seconds)
        if len(naps) == nap:
            stop()

    clock.sleep = sleep  # type: ignore[method-assign]
    return naps


def _operator_stop(ledger: SqliteLedger):
    """The halt a local run records when it is stopped (Ctrl-C, SIGTERM, SIGHUP)."""
    return lambda: ledger.halt(
        CID, code="StoppedByOperator", reason="the run was stopped", attempt="operator"
    )


def test_a_stop_while_the_pacer_waits_ends_the_wait_at_the_next_lookup(ledger, clock):
    # GIVEN a batch paced at one message every 1,000 s, and the operator's stop recorded
    # during the fourth nap of its wait for row 3 (it looks every 0.25 s)
    naps = _stop_at_nap(clock, 4, _operator_stop(ledger))
    ses = FakeSes(clock=clock)

    # WHEN the batch runs
    with pytest.raises(AccountSendingHalted) as stopped:
        run(items(3), ses, ledger, clock, pacer=Pacer(0.001, clock=clock, sleep=clock.sleep))

    # THEN the wait ends at the lookup after that nap, and the wait at the batch's end after
    # one more nap (its next lookup), not 1,000 s later: row 2 went, row 3 is given back
    # unsent and in no doubt (nothing was tried), row 4 is left for the redrive
    assert len(naps) == 5
    assert len(ses.calls) == 1
    assert stopped.value.details["deferred"] == [3, 4]
    assert [(o.row, o.state, o.doubtful) for o in ledger.outcomes(CID)] == [
        (2, "sent", False),
        (3, "released", False),
    ]
    # AND the redrive sends the rest, none of them as a possible duplicate
    ledger.clear_halt(CID)
    result = run(items(3), ses, ledger, clock, pacer=Pacer(1000, clock=clock, sleep=clock.sleep))
    assert [(r["row"], r["status"], "takeover" in r) for r in result.rows] == [
        (2, "sent", False),
        (3, "sent", False),
        (4, "sent", False),
    ]
    assert len(ses.calls) == 3


def test_a_stop_during_the_wait_at_a_batch_s_end_ends_it(ledger, clock):
    # GIVEN a batch of one row paced at one message every 1,000 s, and the operator's stop
    # recorded during the fourth nap of the wait that follows its send
    naps = _stop_at_nap(clock, 4, _operator_stop(ledger))

    # WHEN the batch runs
    pacer = Pacer(0.001, clock=clock, sleep=clock.sleep)
    result = run(items(1), FakeSes(clock=clock), ledger, clock, pacer=pacer)

    # THEN its row is sent and the wait ends at the next lookup: the batch succeeds at once
    assert result.sent == 1
    assert len(naps) == 4


def test_a_newer_upload_validated_while_the_pacer_waits_ends_the_wait(ledger, clock):
    # GIVEN a batch of the latest upload, paced at one message every 1,000 s, and a newer
    # upload validated during the second nap of its wait for row 3
    ledger.record_upload(_upload("v1", "0001"))
    naps = _stop_at_nap(clock, 2, lambda: ledger.record_upload(_upload("v2", "0002")))
    ses = FakeSes(clock=clock)

    # WHEN the batch runs
    paced, v1 = Pacer(0.001, clock=clock, sleep=clock.sleep), kit.campaign(upload="v1")
    result = run(items(3), ses, ledger, clock, campaign=v1, pacer=paced)

    # THEN it hands rows 3 and 4 to the newer upload's execution at the next lookup (and ends
    # the wait at its end after one more nap), row 3's claim given back so that execution
    # sends it at once
    assert len(naps) == 3
    assert len(ses.calls) == 1
    assert [(r["row"], r.get("code")) for r in result.rows] == [
        (2, None),
        (3, "Superseded"),
        (4, "Superseded"),
    ]
    assert [(o.row, o.state) for o in ledger.outcomes(CID)] == [(2, "sent"), (3, "released")]


def test_a_pacer_wait_into_the_invocation_s_last_seconds_stops_the_batch_for_a_retry(ledger, clock):
    # GIVEN a batch paced at one message every 100 s, in an invocation with 200 s left
    ses = FakeSes(clock=clock)
    pacer = Pacer(0.01, clock=clock, sleep=clock.sleep)

    # WHEN it runs
    with pytest.raises(TransientSendError) as stopped:
        run(items(4), ses, ledger, clock, pacer=pacer, deadline=clock.now + 200)

    # THEN rows 2 and 3 go; the wait for row 4, which would end in the last 30 s the batch
    # keeps, stops it there (not Lambda's timeout in the middle of a send): row 4 is given
    # back, and the retry sends it and row 5
    assert len(ses.calls) == 2
    assert stopped.value.details["code"] == "TimeBudget"
    assert stopped.value.details["deferred"] == [4, 5]
    assert [(o.row, o.state) for o in ledger.outcomes(CID)][2:] == [(4, "released")]


def test_a_letter_in_another_unicode_form_prints_alike_and_another_text_does_not():
    nfc = Rendered("Offre pour José Núñez", "<p>Bonjour José Núñez</p>", "Bonjour José Núñez")
    nfd = Rendered(
        *(unicodedata.normalize("NFD", part) for part in (nfc.subject, nfc.html, nfc.text))
    )
    assert nfd.subject != nfc.subject  # the same to read, other code points

    assert letter_print("J@Example.com", nfd, "ab") == letter_print("j@example.com", nfc, "ab")
    other = Rendered(nfc.subject, nfc.html, "Bonjour Jose Nunez")
    assert letter_print("j@example.com", other, "ab") != letter_print("j@example.com", nfc, "ab")
    assert letter_print("j@example.com", nfc, "cd") != letter_print("j@example.com", nfc, "ab")


def test_a_retry_of_a_send_does_not_start_in_the_invocation_s_last_seconds(ledger, clock):
    # GIVEN a first try that waits 25 s and goes unanswered, in an invocation with 40 s left
    class Unanswered:
        calls = 0

        def send(self, raw, *, sender, destinations, key=""):
            self.calls += 1
            clock.sleep(25)
            raise TransientSendError("ses: send_email: read timeout")

    mailer = Unanswered()

    # WHEN the batch runs
    with pytest.raises(TransientSendError) as stopped:
        run(items(2), mailer, ledger, clock, deadline=clock.now + 40)

    # THEN no second try starts with less than the reserve (30 s) left, which its answer and
    # the ledger write recording it may need: the row is given back as possibly sent, and the
    # batch stops for a retry
    assert mailer.calls == 1
    assert stopped.value.details["code"] == "TimeBudget"
    assert stopped.value.details["deferred"] == [2, 3]
    (first, *_) = ledger.outcomes(CID)
    assert (first.row, first.state, first.uncertain) == (2, "released", True)
