"""A batch result is kept within what a Step Functions state may return, every row in it."""

from __future__ import annotations

import json

from mailmatrix.core.payload import CUT_MARK, RESULT_BUDGET_BYTES, fit_batch_result, result_size
from mailmatrix.core.send import REASON_CHARS, BatchResult

STATE_LIMIT = 256 * 1024
# A server's refusal, with non-ASCII (escaped to six bytes each in the Lambda's JSON).
REFUSAL = "550 5.1.1 <jürgen@exämple.org>: Recipient address rejected — user unknown; "


def failed_batch(rows: int, reason_chars: int = REASON_CHARS) -> dict:
    """The SendBatch result of ``rows`` rows refused for good, each with a long reason."""
    reason = (REFUSAL * (reason_chars // len(REFUSAL) + 1))[:reason_chars]
    return BatchResult(
        rows=[
            {"row": 2 + i, "status": "failed", "code": "MessageRejected", "reason": reason}
            for i in range(rows)
        ]
    ).to_dict()


def test_a_thousand_failed_rows_with_long_reasons_fit_in_the_budget():
    # GIVEN 1,000 failed rows with 500-character reasons: more than a state may return
    result = failed_batch(1000)
    assert result_size(result) > STATE_LIMIT

    # WHEN the result is fitted
    fitted = fit_batch_result(result)

    # THEN it fits the budget, with every row, status, code and count as it was
    assert result_size(fitted) <= RESULT_BUDGET_BYTES
    assert len(json.dumps(fitted, ensure_ascii=False).encode()) <= RESULT_BUDGET_BYTES
    assert {k: v for k, v in fitted.items() if k != "rows"} == {
        "sent": 0,
        "skipped": 0,
        "failed": 1000,
    }
    assert [{k: v for k, v in r.items() if k != "reason"} for r in fitted["rows"]] == [
        {k: v for k, v in r.items() if k != "reason"} for r in result["rows"]
    ]

    # AND each reason is the start of the original, marked as cut, all cut alike and no
    # shorter than needed (one more character each would not fit)
    original = result["rows"][0]["reason"]
    reasons = {r["reason"] for r in fitted["rows"]}
    (reason,) = reasons
    assert reason.endswith(CUT_MARK) and original.startswith(reason[: -len(CUT_MARK)])
    one_more = [dict(r, reason=original[: len(reason)] + CUT_MARK) for r in fitted["rows"]]
    assert result_size({**fitted, "rows": one_more}) > RESULT_BUDGET_BYTES


def test_a_result_that_fits_is_returned_as_it_is():
    result = failed_batch(100)
    assert fit_batch_result(result) is result


def test_only_the_long_texts_are_cut_and_short_ones_stay_whole():
    # GIVEN a batch of sent rows (short) and failed rows (long), one sent row taken over
    result = failed_batch(900)
    result["rows"] += [
        {"row": 5000 + i, "status": "sent", "message_id": f"0100-{i:060d}"} for i in range(100)
    ]
    result["rows"][-1]["takeover"] = "an earlier try timed out or lost its reply"

    # WHEN it is fitted to a budget that the failed rows' reasons exceed
    fitted = fit_batch_result(result, budget=150 * 1024)

    # THEN the sent rows are untouched and the reasons are cut
    assert result_size(fitted) <= 150 * 1024
    assert fitted["rows"][900:] == result["rows"][900:]
    assert all(r["reason"].endswith(CUT_MARK) for r in fitted["rows"][:900])


def test_a_budget_no_cut_can_meet_still_keeps_every_row():
    # GIVEN a budget smaller than the rows without their reasons
    result = failed_batch(50)

    # WHEN the result is fitted THEN every row stays, its reason cut to the mark alone
    fitted = fit_batch_result(result, budget=100)
    assert len(fitted["rows"]) == 50
    assert {r["reason"] for r in fitted["rows"]} == {CUT_MARK}
