"""A small evaluator of IAM Allow statements: does a role let its function make an AWS call?

Enough to judge the stack's own roles, which hold only Allow statements in inline policies:
an action matches with ``*`` and ``?`` wildcards, case-insensitively; a resource matches as a
glob once the template's ``${...}`` and intrinsic functions are filled in; a Condition holds
only through the context keys the request gives (StringEquals, StringLike). A condition key
the request does not give, or an operator not known here, makes the statement not apply, so
the evaluator errs towards "denied". Deny statements, resource policies, permission
boundaries and SCPs are out of scope: nothing in the stack narrows these roles that way.

``requests_for`` turns one recorded SDK call into the IAM requests AWS authorizes for it
(HeadObject needs s3:GetObject, a listing needs s3:ListBucket with the prefix as s3:prefix).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PARTITION = "aws"


@dataclass(frozen=True)
class Request:
    """One IAM authorization: an action on a resource, with the condition keys it carries."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """One SDK call made by a function: service, operation and the parameters that name things."""

    function: str | None
    service: str
    operation: str
    params: Mapping[str, str]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def fill(value: Any, names: Mapping[str, str]) -> str:
    """Resolve Ref, Fn::GetAtt, Fn::Sub and Fn::Join with ``names``; unknown names stay ${...}."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return names.get(value["Ref"], "${" + value["Ref"] + "}")
    if "Fn::GetAtt" in value:
        name = ".".join(as_list(value["Fn::GetAtt"]))
        return names.get(name, "${" + name + "}")
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        text, local = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
        known = {**names, **{k: fill(v, names) for k, v in local.items()}}
        return re.sub(r"\$\{([^}!]+)\}", lambda m: known.get(m.group(1), m.group(0)), text)
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(fill(part, names) for part in parts)
    raise ValueError(f"cannot fill {value!r}")


def role_statements(
    template: dict[str, Any], role: str, names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The statements of ``role``'s inline policies (or of the managed policy ``role``),
    with their resources filled in."""
    properties = template["Resources"][role]["Properties"]
    documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
    if "PolicyDocument" in properties:
        documents.append(properties["PolicyDocument"])
    found = []
    for document in documents:
        for statement in as_list(document["Statement"]):
            resources = [fill(r, names) for r in as_list(statement.get("Resource", []))]
            found.append({**statement, "Resource": resources})
    return found


def _glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE if ignore_case else 0)


def glob_matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcard matching: ``*`` any run of characters (``/`` and ``:`` too), ``?`` one."""
    return _glob(pattern, ignore_case=ignore_case).fullmatch(value) is not None


def naming(params: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The parameters of a call that name what it touches (``names``; of a batch read: its
    tables; of a transaction: each item's action and table, as ``Put:table``)."""
    named = {k: str(v) for k, v in params.items() if k in names}
    if "RequestItems" in params:
        named["RequestItems"] = ",".join(params["RequestItems"])
    if "TransactItems" in params:
        named["TransactItems"] = ",".join(
            f"{action}:{request['TableName']}"
            for item in params["TransactItems"]
            for action, request in item.items()
        )
    return named


def condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    """Whether every operator and key of ``condition`` is satisfied by ``context``."""
    for operator, tests in condition.items():
        for key, expected in tests.items():
            if key not in context:
                return False
            value = context[key]
            if operator == "StringEquals":
                if value not in as_list(expected):
                    return False
            elif operator == "StringLike":
                if not any(glob_matches(p, value) for p in as_list(expected)):
                    return False
            else:
                return False
    return True


def allowing(statements: list[dict[str, Any]], request: Request) -> list[str]:
    """The Sids (or indexes) of the Allow statements that grant ``request``; empty = denied."""
    granted = []
    for index, statement in enumerate(statements):
        if statement.get("Effect") != "Allow" or "NotAction" in statement:
            continue
        if not any(
            glob_matches(a, request.action, ignore_case=True)
            for a in as_list(statement.get("Action", []))
        ):
            continue
        if not any(glob_matches(r, request.resource) for r in statement["Resource"]):
            continue
        if not condition_holds(statement.get("Condition", {}), request.context):
            continue
        granted.append(statement.get("Sid", str(index)))
    return granted


_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject",
}


_STATES_CALLS = {
    "ListMapRuns",
    "DescribeMapRun",
    "ListExecutions",
    "DescribeExecution",
    "RedriveExecution",
}
# A stack named in a call is authorized by its ARN, which ends in an id AWS gives it.
STACK_ID = "0a1b2c3d-0000-4000-8000-000000000000"

# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html
_TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def requests_for(call: Call, *, region: str, account: str) -> list[Request]:
    """The IAM requests AWS authorizes for ``call``; ValueError for a call not known here.

    S3: https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html
    (HeadObject is authorized as s3:GetObject; ListObjectsV2 as s3:ListBucket on the bucket).
    """
    p = call.params
    if call.service == "s3":
        bucket = f"arn:{PARTITION}:s3:::{p['Bucket']}"
        if call.operation in ("ListObjectsV2", "ListObjects"):
            return [Request("s3:ListBucket", bucket, {"s3:prefix": p.get("Prefix", "")})]
        if call.operation in _S3_OBJECT_ACTIONS:
            action = _S3_OBJECT_ACTIONS[call.operation]
            if action == "s3:GetObject" and p.get("VersionId"):
                action = "s3:GetObjectVersion"
            return [Request(action, f"{bucket}/{p['Key']}")]
    if call.service == "dynamodb":
        tables = f"arn:{PARTITION}:dynamodb:{region}:{account}:table/"
        if call.operation == "BatchGetItem":  # authorized on each table it reads
            names = p["RequestItems"].split(",")
            return [Request("dynamodb:BatchGetItem", tables + name) for name in names]
        if call.operation == "TransactWriteItems":  # authorized item by item, as its action
            items = (item.split(":", 1) for item in p["TransactItems"].split(","))
            return [Request(_TRANSACT_ACTIONS[op], tables + name) for op, name in items]
        table = tables + p["TableName"]
        if p.get("IndexName"):
            table += f"/index/{p['IndexName']}"
        return [Request(f"dynamodb:{call.operation}", table)]
    if call.service == "sesv2":
        ses = f"arn:{PARTITION}:ses:{region}:{account}"
        if call.operation == "GetAccount":
            return [Request("ses:GetAccount", "*")]
        if call.operation == "GetEmailIdentity":
            return [Request("ses:GetEmailIdentity", f"{ses}:identity/{p['EmailIdentity']}")]
        if call.operation == "SendEmail":
            # Authorized on the verified identity that covers the sender: in these runs the
            # address itself (a domain identity is the stack's other choice).
            sender = re.sub(r".*<([^>]*)>.*", r"\1", p["FromEmailAddress"])
            requests = [Request("ses:SendEmail", f"{ses}:identity/{sender}")]
            if p.get("ConfigurationSetName"):
                name = p["ConfigurationSetName"]
                requests.append(Request("ses:SendEmail", f"{ses}:configuration-set/{name}"))
            return requests
    if call.service == "stepfunctions":
        # Authorized on what the call names: the execution (ListMapRuns, DescribeExecution,
        # RedriveExecution), the Map Run (DescribeMapRun, ListExecutions by Map Run) or the
        # state machine (ListExecutions of it).
        named = p.get("executionArn") or p.get("mapRunArn") or p.get("stateMachineArn")
        if call.operation in _STATES_CALLS and named:
            return [Request(f"states:{call.operation}", named)]
    if call.service == "cloudformation" and call.operation == "DescribeStacks":
        stack = p["StackName"]
        if not stack.startswith("arn:"):
            stack = f"arn:{PARTITION}:cloudformation:{region}:{account}:stack/{stack}/{STACK_ID}"
        return [Request("cloudformation:DescribeStacks", stack)]
    if call.service == "sns" and call.operation == "Publish":
        return [Request("sns:Publish", p["TopicArn"])]
    raise ValueError(f"no IAM mapping for {call.service}:{call.operation}: add one here")
