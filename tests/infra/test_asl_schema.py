"""The state machine definition passes cfn-lint's Step Functions definition schema (E3601)."""

from __future__ import annotations

import json
import re

import pytest
from cfnlint.api import ManualArgs, lint
from infra_support import ROOT

DEFINITION = ROOT / "statemachine" / "mailmatrix.asl.json"
ARNS = {
    "ValidateFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:validate",
    "SendBatchFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:send-batch",
    "SummarizeFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:summarize",
    "SummaryTopicArn": "arn:aws:sns:eu-west-1:123456789012:summaries",
}


def load_definition() -> dict:
    text = DEFINITION.read_text(encoding="utf-8")
    return json.loads(re.sub(r"\$\{(\w+)\}", lambda m: ARNS[m.group(1)], text))


def schema_findings(definition: dict) -> list[str]:
    """Lint the definition inside a bare state machine resource; return the E3601 findings."""
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": "arn:aws:iam::123456789012:role/mailmatrix",
                    "Definition": definition,
                },
            }
        },
    }
    matches = lint(json.dumps(template), config=ManualArgs(regions=["eu-west-1"]))
    return [str(match) for match in matches if match.rule.id == "E3601"]


def test_the_definition_passes_the_step_functions_schema():
    assert schema_findings(load_definition()) == []


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda d: d["States"]["ValidateRecipients"].pop("Resource"), id="no-resource"),
        pytest.param(lambda d: d["States"]["AnythingToSend"].update(Type="Switch"), id="bad-type"),
        pytest.param(lambda d: d["States"]["AnythingToSend"].pop("Choices"), id="no-choices"),
    ],
)
def test_the_schema_check_rejects_broken_definitions(breakage):
    definition = load_definition()
    breakage(definition)
    assert schema_findings(definition) != []
