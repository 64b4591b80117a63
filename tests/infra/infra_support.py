"""Helpers of the infra tests: where the template is, and how to transform it offline."""

from __future__ import annotations

import json
import pathlib
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "template.yaml"

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class _NoManagedPolicies:
    """The translator asks IAM for managed policy ARNs only when a function names one."""

    def load(self) -> dict[str, str]:
        return {}


def load_sam_template() -> dict[str, Any]:
    """Return infra/template.yaml parsed, with CloudFormation's short tags understood."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text(encoding="utf-8"))


def transform_template() -> dict[str, Any]:
    """Return the template transformed by aws-sam-translator, as `sam package` would feed it.

    Local code locations become placeholder S3 objects and the state machine definition is
    inlined from its file, which is what `sam package` does before deploying.
    """
    from samtranslator.translator.transform import transform

    template = load_sam_template()
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = "s3://placeholder/code.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = "s3://placeholder/layer.zip"
        elif resource["Type"] == "AWS::Serverless::StateMachine":
            path = INFRA / properties.pop("DefinitionUri")
            properties["Definition"] = json.loads(path.read_text(encoding="utf-8"))
    return transform(template, {}, _NoManagedPolicies())
