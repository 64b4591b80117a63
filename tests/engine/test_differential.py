"""Differential suite: the same small definitions on the local engine and on moto's interpreter.

moto 5.2.5 runs definitions in-process with ``mock_aws(config={"stepfunctions":
{"execute_state_machine": True}})``. For each case both must give the same status, output,
error, and sequence of history event types; known differences are listed in DIFFERENCES.md
and normalised below, each with its reason.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws

from mailmatrix.engine import Engine, ResourceRegistry
from tests.engine.cases_differential import CASES

ROLE = "arn:aws:iam::123456789012:role/sfn"

# Differences, each explained in DIFFERENCES.md: cause wording; the error of a Choice with no
# match (moto: States.Runtime, the specification: States.NoChoiceMatched); inline Map and
# Parallel event order (moto runs iterations and branches concurrently, so only the multiset of
# event types is compared).
CAUSE_WORDING_DIFFERS = {"choice-no-match", "runtime-missing-path"}
ERROR_DIFFERS = {"choice-no-match": ("States.NoChoiceMatched", "States.Runtime")}
ORDER_DIFFERS = {
    "map-inline",
    "map-item-selector",
    "parallel-two-branches",
    "parallel-result-selector",
    "parallel-catch",
}


@pytest.fixture(scope="module")
def moto_sfn(aws_env: None) -> Any:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions", region_name="eu-west-1")


def run_on_moto(client: Any, case_id: str, definition: dict, data: Any) -> dict[str, Any]:
    arn = client.create_state_machine(
        name=f"m-{case_id}", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]
    execution = client.start_execution(stateMachineArn=arn, input=json.dumps(data))["executionArn"]
    deadline = time.monotonic() + 20
    while True:
        described = client.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    events = client.get_execution_history(executionArn=execution)["events"]
    return {
        "status": described["status"],
        "output": _output(described.get("output")),
        "error": described.get("error"),
        "cause": described.get("cause"),
        "events": [e["type"] for e in events],
    }


def _output(text: str | None) -> Any:
    # moto returns a string output unquoted (not JSON); see DIFFERENCES.md.
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_locally(tmp_path: Any, definition: dict, data: Any) -> dict[str, Any]:
    engine = Engine(tmp_path / "executions", ResourceRegistry(), sleep=lambda s: None)
    record = engine.start(json.dumps(definition), data)
    return {
        "status": record["status"],
        "output": record.get("output"),
        "error": record.get("error"),
        "cause": record.get("cause"),
        "events": [e["type"] for e in engine.history(record["name"])],
    }


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(("case_id", "definition", "data"), CASES, ids=[c[0] for c in CASES])
def test_engines_agree(
    moto_sfn: Any, tmp_path: Any, case_id: str, definition: dict, data: Any
) -> None:
    # GIVEN one definition and input
    # WHEN both engines run it
    theirs = run_on_moto(moto_sfn, case_id, definition, data)
    ours = run_locally(tmp_path, definition, data)

    # THEN status, output, error, cause and the event types agree
    if case_id in CAUSE_WORDING_DIFFERS:
        theirs.pop("cause")
        ours.pop("cause")
    if case_id in ERROR_DIFFERS:
        assert (ours.pop("error"), theirs.pop("error")) == ERROR_DIFFERS[case_id]
    if case_id in ORDER_DIFFERS:
        assert ours["events"][:3] == theirs["events"][:3]
        ours["events"] = sorted(ours["events"])
        theirs["events"] = sorted(theirs["events"])
    assert ours == theirs
