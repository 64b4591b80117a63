"""Keep a state's result within what Step Functions lets a task return.

A task result is at most 256 KiB of UTF-8
(https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html): a larger one fails
the state with States.DataLimitExceeded, a terminal error (States.ALL does not match it), and a
redrive of the batch fails the same way. A batch of many failed rows, each with a long reason,
gets there: 1,000 rows with 500-character reasons make about 580 KB.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

# Below the 256 KiB limit, leaving room for what the Lambda integration wraps around the
# payload (status code, version, HTTP metadata).
RESULT_BUDGET_BYTES = 200 * 1024
# The free-text fields of a batch result's rows; everything else is short and is never cut.
TEXT_FIELDS = ("reason", "takeover")
CUT_MARK = "…"


def result_size(result: Any) -> int:
    """Bytes of ``result`` as JSON, measured generously.

    ASCII-escaped with the default separators, as the Lambda runtime writes it: never
    smaller than Step Functions' own UTF-8 encoding of the same value.
    """
    return len(json.dumps(result))


def fit_batch_result(result: dict[str, Any], budget: int = RESULT_BUDGET_BYTES) -> dict[str, Any]:
    """Return ``result`` with its rows' reasons shortened until its JSON fits ``budget``.

    Every row stays, with its row number, status, code and message id; only the free-text
    fields are cut, all to the same longest length that fits, and each cut one ends with "…"
    (the ledger keeps the whole reason). A result that fits is returned as it is.
    """
    if result_size(result) <= budget:
        return result
    longest = max(
        (len(row[f]) for row in result["rows"] for f in TEXT_FIELDS if isinstance(row.get(f), str)),
        default=0,
    )
    # The largest length that fits: a binary search over what to keep of each text.
    low, high = 0, longest
    while low < high:
        middle = (low + high + 1) // 2
        if result_size(_cut(result, middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    fitted = _cut(result, low)  # may stay over the budget: rows without text past any cut
    log.debug(
        "batch result cut from %d to %d bytes: texts kept to %d characters",
        result_size(result),
        result_size(fitted),
        low,
    )
    return fitted


def _cut(result: dict[str, Any], keep: int) -> dict[str, Any]:
    """``result`` with every text field longer than ``keep`` cut to ``keep`` characters."""
    rows = []
    for row in result["rows"]:
        short = dict(row)
        for name in TEXT_FIELDS:
            text = row.get(name)
            if isinstance(text, str) and len(text) > keep:
                short[name] = text[: max(keep - len(CUT_MARK), 0)] + CUT_MARK
        rows.append(short)
    return {**result, "rows": rows}
