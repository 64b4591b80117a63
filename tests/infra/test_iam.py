"""Least privilege: every IAM statement of the deployed template, walked and judged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Actions that AWS does not let a policy scope to a resource, with the reason. A statement with
# Resource "*" passes only when every one of its actions is listed here.
UNSCOPABLE_ACTIONS = {
    # X-Ray has no resource-level permissions for writing traces or reading sampling rules.
    "xray:PutTraceSegments": "X-Ray supports no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray supports no resource-level permissions",
    "xray:GetSamplingRules": "X-Ray supports no resource-level permissions",
    "xray:GetSamplingTargets": "X-Ray supports no resource-level permissions",
    # Step Functions logging goes through the CloudWatch Logs vended-delivery API.
    "logs:CreateLogDelivery": "log delivery API: no resource-level permissions",
    "logs:GetLogDelivery": "log delivery API: no resource-level permissions",
    "logs:UpdateLogDelivery": "log delivery API: no resource-level permissions",
    "logs:DeleteLogDelivery": "log delivery API: no resource-level permissions",
    "logs:ListLogDeliveries": "log delivery API: no resource-level permissions",
    "logs:PutResourcePolicy": "log delivery API: no resource-level permissions",
    "logs:DescribeResourcePolicies": "log delivery API: no resource-level permissions",
    "logs:DescribeLogGroups": "log delivery API: no resource-level permissions",
    # The SES account (quota, sending enabled) is not a resource type.
    "ses:GetAccount": "SES account settings have no resource type",
}
POLICY_DOCUMENT_TYPES = {
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
}
# In a KMS key policy "*" means the key the policy is attached to, nothing else.
KEY_POLICY_TYPES = {"AWS::KMS::Key"}


def statements(template: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (resource name, resource type, statement) for every policy in the template."""
    for name, resource in template["Resources"].items():
        kind = resource["Type"]
        properties = resource.get("Properties", {})
        documents = []
        if kind == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in properties.get("Policies", [])]
        elif kind in POLICY_DOCUMENT_TYPES:
            documents.append(properties["PolicyDocument"])
        elif kind in KEY_POLICY_TYPES:
            documents.append(properties["KeyPolicy"])
        for document in documents:
            for statement in document["Statement"]:
                yield name, kind, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def render(value: Any) -> str:
    """Render an ARN that may be built with intrinsic functions into a readable string."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if "Fn::GetAtt" in value:
        return "${" + ".".join(as_list(value["Fn::GetAtt"])) + "}"
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(part) for part in parts)
    raise AssertionError(f"cannot read resource {value!r}")


def is_wildcard_resource(resource: str) -> bool:
    """True for "*" and for ARNs whose resource part is only a wildcard (table/*, function:*)."""
    if resource == "*":
        return True
    parts = resource.split(":", 5)
    return len(parts) == 6 and parts[5].rstrip("*").rstrip("/:").isalpha() and "*" in parts[5]


def judge(kind: str, statement: dict[str, Any]) -> list[str]:
    """Return what is wrong with one statement (empty when it is least privilege)."""
    problems = []
    if statement["Effect"] == "Deny":
        return problems  # a broad deny only narrows access
    actions = as_list(statement.get("Action", []))
    if "NotAction" in statement or "NotResource" in statement:
        problems.append("NotAction/NotResource grants more than it names")
    problems += [f"wildcard action {a}" for a in actions if "*" in a]
    if kind == "AWS::IAM::Role" or kind.startswith("AWS::IAM::"):
        for resource in map(render, as_list(statement.get("Resource", []))):
            if is_wildcard_resource(resource):
                unlisted = [a for a in actions if a not in UNSCOPABLE_ACTIONS]
                if unlisted:
                    problems.append(f"resource {resource} for scopable actions {unlisted}")
    elif kind not in KEY_POLICY_TYPES and statement.get("Principal") == "*":
        problems.append("allows any principal")
    return problems


def test_the_template_has_the_roles_and_policies_to_walk(transformed):
    walked = {(name, kind) for name, kind, _ in statements(transformed)}
    roles = {name for name, kind in walked if kind == "AWS::IAM::Role"}
    assert {
        "ValidateRole",
        "SendBatchRole",
        "SummarizeRole",
        "SesEventsRole",
        "StateMachineRole",
        "UploadRuleRole",
    } <= roles
    assert ("DataKey", "AWS::KMS::Key") in walked
    # The operators' policy is walked as the roles are: a wildcard action in it fails too.
    assert ("OperatorPolicy", "AWS::IAM::ManagedPolicy") in walked
    resource_policies = {kind for _, kind in walked} & POLICY_DOCUMENT_TYPES
    assert resource_policies == {
        "AWS::IAM::ManagedPolicy",
        "AWS::S3::BucketPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::SNS::TopicPolicy",
    }


def test_no_statement_has_a_wildcard_action_or_an_unexplained_wildcard_resource(transformed):
    findings = [
        f"{name} {statement.get('Sid', '')}: {problem}"
        for name, kind, statement in statements(transformed)
        for problem in judge(kind, statement)
    ]
    assert findings == []


def test_no_role_relies_on_broad_managed_policies(transformed):
    for name, resource in transformed["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            assert resource["Properties"].get("ManagedPolicyArns", []) == [], name


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/x"}, "wildcard action"),
        ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}, "resource *"),
        (
            {
                "Effect": "Allow",
                "Action": "dynamodb:GetItem",
                "Resource": "arn:aws:dynamodb:r:1:table/*",
            },
            "resource arn:aws:dynamodb:r:1:table/*",
        ),
        (
            {
                "Effect": "Allow",
                "Action": ["xray:PutTraceSegments", "s3:PutObject"],
                "Resource": "*",
            },
            "scopable actions ['s3:PutObject']",
        ),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "NotAction"),
    ],
    ids=["action", "star", "any-table", "mixed", "not-action"],
)
def test_the_walker_flags_broad_statements(statement, problem):
    assert any(problem in found for found in judge("AWS::IAM::Role", statement))


def test_the_walker_accepts_scoped_and_allow_listed_statements():
    scoped = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${B.Arn}/x/*"}}
    listed = {"Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": "*"}
    assert judge("AWS::IAM::Role", scoped) == []
    assert judge("AWS::IAM::Role", listed) == []
