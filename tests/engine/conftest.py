"""Fixtures of the engine tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Fake credentials so boto3 under moto never looks elsewhere."""
    mp = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        mp.setenv(name, value)
    yield
    mp.undo()
