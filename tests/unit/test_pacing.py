"""The send plan and the per-worker pacer: under the account's rate, and close to it."""

from __future__ import annotations

import contextlib
import heapq
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.core.pacing import (
    BATCH_TIME_S,
    MIN_SEND_RATE,
    SAFETY,
    Pacer,
    plan_send,
)
from mailmatrix.errors import Throttled
from tests.fixtures.sending.kit import FakeClock


def test_local_runs_without_a_rate_are_not_paced():
    plan = plan_send(send_rate=0, valid_rows=180, batch_size=25, max_concurrency=4)

    assert plan == {
        "batch_size": 25,
        "max_concurrency": 4,
        "tolerated_failure_percentage": 0,
        "dry_run": False,
        "per_worker_rate": 0.0,
        "expected_rate": 0.0,
    }
    assert Pacer.for_campaign({"per_worker_rate": plan["per_worker_rate"]}) is None


def test_the_default_ses_rate_needs_one_worker_at_low_latency():
    plan = plan_send(
        send_rate=14, valid_rows=1000, batch_size=25, max_concurrency=40, expected_latency_s=0.05
    )

    assert plan["max_concurrency"] == 1
    assert plan["per_worker_rate"] == pytest.approx(14 * SAFETY)
    assert plan["expected_rate"] == pytest.approx(14 * SAFETY)


def test_a_high_rate_spreads_over_enough_workers_to_keep_each_under_capacity():
    plan = plan_send(
        send_rate=100, valid_rows=10_000, batch_size=25, max_concurrency=40, expected_latency_s=0.1
    )

    # each worker can do 10/s at 100 ms; at 80% utilisation 98/s needs 13 of them
    assert plan["max_concurrency"] == 13
    assert plan["per_worker_rate"] * 0.1 <= 0.8
    assert plan["max_concurrency"] * plan["per_worker_rate"] == pytest.approx(100 * SAFETY)


def test_a_small_campaign_runs_no_more_workers_than_batches():
    plan = plan_send(
        send_rate=100, valid_rows=40, batch_size=25, max_concurrency=40, expected_latency_s=0.1
    )

    # batches shrink to share the rows out, but not below 10 rows
    assert (plan["batch_size"], plan["max_concurrency"]) == (10, 4)
    # four workers cannot reach the rate; the plan says what it expects instead of pretending
    assert plan["expected_rate"] == pytest.approx(40)


def test_batches_shrink_so_every_worker_gets_the_same_number_of_rounds():
    plan = plan_send(
        send_rate=100, valid_rows=400, batch_size=25, max_concurrency=40, expected_latency_s=0.05
    )

    # 7 workers; 16 batches of 25 would leave the third round to 2 of them
    assert (plan["batch_size"], plan["max_concurrency"]) == (20, 7)


def test_a_low_concurrency_bound_is_reported_as_a_lower_expected_rate():
    plan = plan_send(
        send_rate=100, valid_rows=10_000, batch_size=25, max_concurrency=4, expected_latency_s=0.1
    )

    assert plan["max_concurrency"] == 4
    assert plan["expected_rate"] == pytest.approx(40)


@given(
    rate=st.floats(min_value=MIN_SEND_RATE, max_value=5000),
    rows=st.integers(min_value=1, max_value=200_000),
    batch=st.integers(min_value=1, max_value=1000),
    bound=st.integers(min_value=1, max_value=10_000),
    latency=st.floats(min_value=0.0, max_value=2.0),
)
def test_the_plan_never_exceeds_the_rate_reaches_95_percent_when_it_can_and_paces_each_batch(
    rate, rows, batch, bound, latency
):
    plan = plan_send(
        send_rate=rate,
        valid_rows=rows,
        batch_size=batch,
        max_concurrency=bound,
        expected_latency_s=latency,
    )

    workers = plan["max_concurrency"]
    assert 1 <= workers <= bound
    assert 1 <= plan["batch_size"] <= batch
    assert workers * plan["per_worker_rate"] <= rate * (1 + 1e-6)
    batches = -(-rows // plan["batch_size"])
    assert workers <= batches
    if plan["expected_rate"] < 0.95 * rate:
        # short of the rate only when the bound or the campaign's size caps the workers
        assert workers in (bound, batches)
    # a batch's rows and the wait at its end, an interval each, fit in one invocation (the
    # plan's rate is rounded: 1e-4)
    assert plan["batch_size"] / plan["per_worker_rate"] <= BATCH_TIME_S * (1 + 1e-4)


def test_a_slow_rate_gets_batches_it_can_pace_within_one_invocation():
    # GIVEN one message a minute, the slowest rate taken, and batches of 25 asked for
    plan = plan_send(send_rate=MIN_SEND_RATE, valid_rows=100, batch_size=25, max_concurrency=4)

    # THEN one worker sends batches of 13 rows, the most whose intervals fit in an invocation
    # (25 would take 25 minutes: the invocation's time would cut every batch short)
    assert (plan["batch_size"], plan["max_concurrency"]) == (13, 1)
    assert plan["batch_size"] / plan["per_worker_rate"] <= BATCH_TIME_S


def test_a_wait_given_to_the_pacer_waits_instead_of_its_sleep():
    clock = FakeClock(start=0.0)
    pacer = Pacer(2, clock=clock, sleep=lambda seconds: pytest.fail("the pacer's own sleep"))
    waits: list[float] = []

    pacer.acquire(wait=waits.append)
    pacer.acquire(wait=waits.append)
    pacer.finish(wait=waits.append)

    assert waits == [0.5, 1.0]


def test_the_pacer_spaces_sends_from_slot_to_slot():
    clock = FakeClock(start=0.0)
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    times = []

    for _ in range(5):
        pacer.acquire()
        times.append(clock.now)
        clock.sleep(0.1)  # the send itself takes 100 ms, within the 250 ms interval

    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_a_slow_send_delays_the_next_slot_without_a_catch_up_burst():
    clock = FakeClock(start=0.0)
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)

    pacer.acquire()
    clock.sleep(1.0)
    assert pacer.acquire() == 0
    assert pacer.acquire() == pytest.approx(0.25)


def test_the_campaign_pacer_falls_back_to_the_rate_split_over_the_workers():
    pacer = Pacer.for_campaign({"send_rate": 10, "max_concurrency": 2})
    assert pacer.rate == pytest.approx(5 * SAFETY)
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(0)


def simulate(rate, latency, *, rows, batch_size=25, jitter=0.0, overhead=0.02, seed=7):
    """Run the plan's workers against a rate-enforcing fake SES on one simulated clock.

    Each worker takes the next batch when free, builds a fresh Pacer for it (a new Lambda
    invocation), and each send takes ``latency`` (+- ``jitter`` share). Returns the fake SES
    and the time the last batch was handed out: the end of the steady state, after which
    fewer workers than planned remain busy (the campaign's tail).
    """
    plan = plan_send(
        send_rate=rate,
        valid_rows=rows,
        batch_size=batch_size,
        max_concurrency=1000,
        expected_latency_s=latency,
    )
    clock = FakeClock(start=0.0)
    ses = FakeSes({"max_send_rate_per_second": rate}, enforce_rate=True, clock=clock)
    rng = random.Random(seed)
    size = plan["batch_size"]
    batches = [min(size, rows - start) for start in range(0, rows, size)]
    ready = [(0.0, worker) for worker in range(plan["max_concurrency"])]
    state = {}
    steady_until = None
    while ready:
        now, worker = heapq.heappop(ready)
        clock.now = now
        if worker not in state or state[worker][1] == 0:
            if not batches:
                continue
            state[worker] = [Pacer(plan["per_worker_rate"], clock=clock, sleep=lambda s: None), 0]
            state[worker][1] = batches.pop(0)
            if not batches:
                steady_until = now
        pacer = state[worker][0]
        clock.now = now + pacer.acquire()
        with contextlib.suppress(Throttled):
            ses.send(b"x", sender="a@example.com", destinations=["b@example.com"])
        state[worker][1] -= 1
        clock.now += latency * (1 + rng.uniform(-jitter, jitter))
        if state[worker][1] == 0:
            clock.now += pacer.finish() + overhead
        heapq.heappush(ready, (clock.now, worker))
    return ses, steady_until


@pytest.mark.parametrize(
    ("rate", "latency", "jitter"),
    [(14, 0.05, 0.0), (2, 0.1, 0.0), (100, 0.1, 0.0), (100, 0.1, 0.25), (50, 0.3, 0.25)],
    ids=["ses-default", "case18", "fast", "fast-jittery", "slow-jittery"],
)
def test_concurrent_workers_stay_under_the_rate_and_use_95_percent(rate, latency, jitter):
    ses, steady_until = simulate(rate, latency, rows=rate * 30, jitter=jitter)

    assert ses.throttles() == 0
    assert len(ses.accepted) == rate * 30
    steady = [call.at for call in ses.calls if call.at <= steady_until]
    achieved = (len(steady) - 1) / (steady[-1] - steady[0])
    assert 0.95 * rate <= achieved <= rate
