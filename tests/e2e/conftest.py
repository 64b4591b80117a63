"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.storage_s3 import S3Storage
from tests.e2e.test_aws_adapters_e2e import BUCKET, REGION, moto_account


@pytest.fixture
def account(monkeypatch, tmp_path):
    """A moto account holding the stack's bucket, verified sender, ledger table and topics."""
    with moto_account(monkeypatch, tmp_path) as created:
        yield created


@pytest.fixture(params=["dynamodb", "sqlite"])
def setting(request, monkeypatch, tmp_path):
    """The moto account, its storage, and the ledger under test."""
    with moto_account(monkeypatch, tmp_path) as account:
        for name, value in {
            "MAILMATRIX_STORAGE": "s3",
            "MAILMATRIX_MAILER": "ses",
            "MAILMATRIX_LEDGER": "dynamodb://ledger",
            "MAILMATRIX_SEND_RATE": "0",
            "MAILMATRIX_SENDER": "Acme Talent <talent@example.com>",
        }.items():
            monkeypatch.setenv(name, value)
        if request.param == "dynamodb":
            ledger: Any = DynamoDbLedger("ledger", boto3.client("dynamodb", region_name=REGION))
        else:
            ledger = SqliteLedger(str(tmp_path / "ledger.sqlite3"))
        yield account, S3Storage(BUCKET, account["s3"]), ledger
        ledger.close()
