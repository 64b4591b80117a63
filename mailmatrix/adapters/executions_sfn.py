"""Why a Step Functions execution of the stack stopped: its Map Runs' failed batches.

The execution's own error, when its batches failed, is States.ExceedToleratedFailureThreshold;
the batches' errors are those of the Map Run's failed child executions, read with ListMapRuns,
DescribeMapRun, ListExecutions (by Map Run, FAILED) and DescribeExecution. Used by the Alert
function (the stack's failure alert) and by `mailmatrix aws send|status|redrive`.
"""

from __future__ import annotations

import logging
from typing import Any

from mailmatrix.core.failures import Ending, Stopped
from mailmatrix.engine.errors import cause_message

logger = logging.getLogger(__name__)

# The failed batches looked at, one DescribeExecution each: they usually fail the same way
# (a halt stops every batch), and the rest are counted.
LOOKED_AT = 20


def console_link(region: str, execution_arn: str) -> str:
    """The execution's page in the Step Functions console."""
    return (
        f"https://{region}.console.aws.amazon.com/states/home?region={region}"
        f"#/v2/executions/details/{execution_arn}"
    )


def ending(described: dict[str, Any]) -> Ending:
    """An execution's ending from DescribeExecution (or an EventBridge status change's
    detail, or a local engine's record: the same keys), its cause without Lambda's stack
    trace."""
    return Ending(
        name=str(described.get("name") or described["executionArn"].rsplit(":", 1)[-1]),
        arn=described["executionArn"],
        status=str(described.get("status") or ""),
        error=described.get("error"),
        cause=str(cause_message(described.get("cause") or "") or ""),
    )


def stopped_batches(sfn: Any, execution_arn: str, *, limit: int = LOOKED_AT) -> Stopped:
    """The errors of the execution's failed batches (the latest ``limit`` of each failed Map
    Run) and how many more failed. ``sfn``: a Step Functions client; its errors are the
    caller's to handle."""
    found: list[tuple[str, str]] = []
    unseen = 0
    for listed in sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", []):
        run = sfn.describe_map_run(mapRunArn=listed["mapRunArn"])
        if run.get("status") != "FAILED":
            continue
        children = sfn.list_executions(
            mapRunArn=listed["mapRunArn"], statusFilter="FAILED", maxResults=limit
        ).get("executions", [])
        for child in children[:limit]:
            described = sfn.describe_execution(executionArn=child["executionArn"])
            message = cause_message(described.get("cause") or "")
            found.append((str(described.get("error") or "?"), str(message or "")))
        counts = run.get("executionCounts") or {}
        unseen += max(0, int(counts.get("failed", 0)) - len(children[:limit]))
    logger.debug("execution %s: %d failed batch(es) looked at", execution_arn, len(found))
    return Stopped(batches=tuple(found), unseen=unseen)
