"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from tests.e2e.test_aws_adapters_e2e import moto_account


@pytest.fixture
def account(monkeypatch, tmp_path):
    """A moto account holding the stack's bucket, verified sender, ledger table and topics."""
    with moto_account(monkeypatch, tmp_path) as created:
        yield created
