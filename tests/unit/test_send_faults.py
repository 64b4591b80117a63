"""The drill mailer (FaultyMailer) and the scripted fake SES."""

from __future__ import annotations

import contextlib

import pytest

from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.adapters.mailer_faults import FaultyMailer, SimulatedCrash, parse_spec
from mailmatrix.errors import (
    AccountSendingHalted,
    ConfigurationError,
    MailMatrixError,
    PermanentSendError,
    Throttled,
    TransientSendError,
)
from tests.fixtures.sending.kit import FakeClock

KINDS = {
    Throttled: "throttle",
    TransientSendError: "transient",
    PermanentSendError: "permanent",
}


def send(mailer, to="a@example.com"):
    return mailer.send(b"raw", sender="s@example.com", destinations=[to])


def test_the_spec_reads_rates_and_the_crash_point():
    assert parse_spec("throttle=0.2, transient=0.05,crash-after=500") == {
        "throttle": 0.2,
        "transient": 0.05,
        "crash-after": 500,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("throttle", "expected NAME=VALUE"),
        ("explode=0.1", "expected NAME=VALUE with NAME one of throttle, transient"),
        ("throttle=lots", "throttle: not a number: 'lots'"),
        ("transient=1.5", "transient: a rate must be 0..1"),
        ("crash-after=0", "crash-after: must be a whole number >= 1"),
        ("crash-after=2.5", "crash-after: must be a whole number >= 1"),
        ("throttle=0.6,transient=0.6", "the rates add up to more than 1"),
    ],
)
def test_a_bad_spec_is_a_configuration_error_naming_the_part(spec, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        FaultyMailer.from_spec(spec, FakeSes())


def test_injected_faults_follow_their_rates_and_the_seed():
    # GIVEN 20% throttling, 5% transient, 5% permanent over 4,000 calls
    inner = FakeSes()
    mailer = FaultyMailer.from_spec("throttle=0.2,transient=0.05,permanent=0.05", inner, seed=3)
    seen = {"ok": 0, "throttle": 0, "transient": 0, "permanent": 0}

    for _ in range(4000):
        try:
            send(mailer)
            seen["ok"] += 1
        except (Throttled, TransientSendError, PermanentSendError) as error:
            seen[KINDS[type(error)]] += 1

    # THEN the shares are close to the rates, faults never reach the inner mailer
    assert 0.18 < seen["throttle"] / 4000 < 0.22
    assert 0.035 < seen["transient"] / 4000 < 0.065
    assert 0.035 < seen["permanent"] / 4000 < 0.065
    assert len(inner.calls) == seen["ok"]
    assert dict(mailer.injected) == {k: v for k, v in seen.items() if k != "ok"}

    # AND the same seed gives the same sequence
    again = FaultyMailer.from_spec("throttle=0.2,transient=0.05,permanent=0.05", FakeSes(), seed=3)
    for _ in range(4000):
        with contextlib.suppress(MailMatrixError):
            send(again)
    assert again.injected == mailer.injected


def test_a_timeout_is_sent_but_looks_like_a_passing_failure():
    inner = FakeSes()
    mailer = FaultyMailer(inner, timeout=1.0)

    with pytest.raises(TransientSendError, match="the service accepted fake-ses-0000001") as error:
        send(mailer)

    assert error.value.details == {"code": "DrillTimeout"}
    assert len(inner.accepted) == 1


def test_the_crash_comes_once_right_after_the_nth_accepted_message():
    inner = FakeSes()
    mailer = FaultyMailer.from_spec("crash-after=3", inner)

    ids = [send(mailer) for _ in range(2)]
    with pytest.raises(SimulatedCrash, match="after message fake-ses-0000003 was accepted"):
        send(mailer)
    ids += [send(mailer) for _ in range(3)]

    assert ids == [f"fake-ses-{n:07d}" for n in (1, 2, 4, 5, 6)]
    assert len(inner.accepted) == 6
    assert not isinstance(SimulatedCrash("x"), MailMatrixError)
    assert SimulatedCrash.asl_error == "Sandbox.Timedout"


def test_the_quota_runs_out_after_n_accepted_messages_for_every_later_send():
    inner = FakeSes()
    mailer = FaultyMailer.from_spec("quota-after=2", inner)

    send(mailer)
    send(mailer)
    for _ in range(2):
        with pytest.raises(AccountSendingHalted, match="Daily message quota exceeded"):
            send(mailer)

    assert len(inner.accepted) == 2
    assert parse_spec("quota-after=5") == {"quota-after": 5.0}
    with pytest.raises(ConfigurationError, match="quota-after: must be a whole number"):
        parse_spec("quota-after=0.5")


def test_fake_ses_scripts_by_call_destination_and_quota():
    ses = FakeSes(
        {
            "failures": [
                {
                    "call": 2,
                    "error": {"Code": "Throttling", "Message": "Maximum sending rate exceeded."},
                }
            ],
            "by_destination": {
                "bob@example.com": {"Code": "MessageRejected", "Message": "not verified"}
            },
            "fail_all_after_successes": 3,
            "error_after_quota": {"Code": "Throttling", "Message": "Daily message quota exceeded."},
        }
    )

    assert send(ses) == "fake-ses-0000001"
    with pytest.raises(Throttled):
        send(ses)
    with pytest.raises(PermanentSendError, match="fake-ses: MessageRejected: not verified"):
        send(ses, to="bob@example.com")
    send(ses)
    send(ses)
    with pytest.raises(AccountSendingHalted, match="Daily message quota exceeded"):
        send(ses)
    assert [c.error for c in ses.calls] == [
        None,
        "Throttled",
        "PermanentSendError",
        None,
        None,
        "AccountSendingHalted",
    ]


def test_fake_ses_enforces_its_rate_with_a_one_second_bucket():
    clock = FakeClock(start=0.0)
    ses = FakeSes({"max_send_rate_per_second": 4}, enforce_rate=True, clock=clock)

    burst = [send(ses) for _ in range(4)]
    with pytest.raises(Throttled, match="Maximum sending rate exceeded"):
        send(ses)
    clock.sleep(0.25)
    send(ses)

    assert len(burst) == 4
    assert ses.throttles() == 1
    assert len(ses.accepted) == 5
