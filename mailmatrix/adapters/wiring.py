"""Builds the adapters named by the settings: the one place that chooses AWS or local.

Imports are local to each branch so a local run never imports boto3 clients it does not use.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from mailmatrix.adapters import deliveries
from mailmatrix.errors import ConfigurationError
from mailmatrix.ports import Ledger, Mailer, Storage
from mailmatrix.settings import Settings


def _file_path(url: str, setting: str) -> Path:
    parsed = urlparse(url)
    if not parsed.path:
        raise ConfigurationError(f"{setting}: no path in {url!r}")
    return Path(unquote(parsed.path))


def storage_for(settings: Settings, bucket: str) -> Storage:
    """Return the storage adapter for ``bucket``."""
    spec = settings.storage
    if spec == "s3":
        from mailmatrix.adapters.storage_s3 import S3Storage

        return S3Storage(bucket)
    if spec.startswith("file://"):
        from mailmatrix.adapters.storage_local import LocalStorage

        root = _file_path(spec, "MAILMATRIX_STORAGE")
        mounts = dict(settings.storage_mounts)
        return LocalStorage(root, bucket=bucket, mounts=mounts)
    raise ConfigurationError(f"MAILMATRIX_STORAGE: expected 's3' or 'file:///DIR', got {spec!r}")


def mailer_from(settings: Settings) -> Mailer:
    """Return the mailer named by MAILMATRIX_MAILER, wrapped for drills if MAILMATRIX_FAULTS."""
    spec = settings.mailer
    scheme = urlparse(spec).scheme or spec
    mailer: Mailer
    if scheme == "ses":
        from mailmatrix.adapters.mailer_ses import SesMailer

        mailer = SesMailer(configuration_set=settings.configuration_set)
    elif scheme == "maildir":
        from mailmatrix.adapters.mailer_maildir import MaildirMailer

        mailer = MaildirMailer(_file_path(spec, "MAILMATRIX_MAILER"))
    elif scheme in ("smtp", "smtps", "smtp+starttls"):
        from mailmatrix.adapters.mailer_smtp import SmtpMailer

        mailer = SmtpMailer.from_url(spec, given_as=settings.mailer_given_as)
    else:
        raise ConfigurationError(
            "MAILMATRIX_MAILER: expected ses, maildir:///DIR, smtp://, smtps:// or "
            f"smtp+starttls://, got {scheme!r}"
        )
    mailer = deliveries.counted(mailer)  # what the drills let through and it accepted
    if settings.faults:
        from mailmatrix.adapters.mailer_faults import FaultyMailer

        mailer = FaultyMailer.from_spec(settings.faults, mailer)
    return mailer


def row_reserve_s(settings: Settings) -> float | None:
    """How much of a SendBatch invocation a row needs left to start (RetryPolicy.reserve_s):
    on AWS's clients, their worst case (_aws.ROW_RESERVE_S); None, core's own, elsewhere."""
    scheme = urlparse(settings.mailer).scheme or settings.mailer
    if scheme == "ses" or settings.ledger.startswith("dynamodb://"):
        from mailmatrix.adapters import _aws

        return _aws.ROW_RESERVE_S
    return None


def ledger_from(settings: Settings) -> Ledger:
    """Return the send ledger named by MAILMATRIX_LEDGER."""
    spec = settings.ledger
    if spec.startswith("sqlite://"):
        from mailmatrix.adapters.ledger_sqlite import SqliteLedger
        from mailmatrix.adapters.smtp_urls import delivery_of

        # A local run: it keeps whether each campaign went to the outbox or a mail server
        delivery = delivery_of(settings.mailer)
        return SqliteLedger(_file_path(spec, "MAILMATRIX_LEDGER"), delivery=delivery)
    if spec.startswith("dynamodb://"):
        from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger

        table = urlparse(spec).netloc
        if not table:
            raise ConfigurationError(f"MAILMATRIX_LEDGER: no table name in {spec!r}")
        return DynamoDbLedger(table)
    raise ConfigurationError(
        f"MAILMATRIX_LEDGER: expected sqlite:///FILE or dynamodb://TABLE, got {spec!r}"
    )
