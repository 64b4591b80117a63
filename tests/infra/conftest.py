"""Fixtures of the infra tests: the SAM template, transformed once per session, offline."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from infra_support import FAKE_AWS, load_sam_template, transform_template


@pytest.fixture(scope="session")
def sam_template() -> dict[str, Any]:
    """infra/template.yaml as written."""
    return load_sam_template()


@pytest.fixture(scope="session")
def transformed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CloudFormation template that SAM produces from infra/template.yaml."""
    saved = {name: os.environ.get(name) for name in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    try:
        return transform_template()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def transformed_file(transformed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    """The transformed template written to a JSON file."""
    path = tmp_path_factory.mktemp("infra") / "transformed.json"
    path.write_text(json.dumps(transformed, indent=1), encoding="utf-8")
    return path
