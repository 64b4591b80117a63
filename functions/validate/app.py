"""ValidateRecipients: stream the uploaded CSV once, write the manifest and the rejects report."""

from __future__ import annotations

from contextlib import ExitStack, closing
from typing import Any

from aws_lambda_powertools import Logger

from mailmatrix.adapters.wiring import ledger_from, storage_for
from mailmatrix.jobs import S3_UPLOAD, Source, validate_job
from mailmatrix.settings import Settings

logger = Logger(service="mailmatrix")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Validate ``event["detail"]`` (an S3 Object Created detail) and plan the send."""
    settings = Settings.from_env()
    source = Source.from_event_detail(S3_UPLOAD.part(event, "detail", dict))
    execution = S3_UPLOAD.part(event, "execution", str, optional=True)
    logger.append_keys(execution=execution, source_key=source.key)
    storage = storage_for(settings, source.bucket)

    preflight = None
    counts = False  # whether the preflight checks a quota, so needs what the run will send
    if settings.mailer == "ses":
        counts = True
        from mailmatrix.adapters.ses_account import preflight as ses_preflight

        def preflight(sender: str, needed: int) -> dict[str, Any]:
            return ses_preflight(sender=sender, needed=needed)

    elif settings.mailer.startswith(("smtp://", "smtps://", "smtp+starttls://")):
        # Imported here, as the mailers are in wiring: a run into the outbox needs no smtplib.
        from mailmatrix.adapters.mailer_smtp import SmtpMailer

        def preflight(sender: str, needed: int) -> dict[str, Any]:
            # The server declares no rate: 0 leaves the pace to MAILMATRIX_SEND_RATE.
            SmtpMailer.from_url(settings.mailer, given_as=settings.mailer_given_as).check()
            return {"max_send_rate": 0.0}

    try:
        # The ledger is opened only when the run sends (not for a dry run); closed after.
        with ExitStack() as opened:
            elsewhere = None
            if settings.other_ledgers:  # a local run's, from another workdir than theirs
                from mailmatrix.adapters.ledgers_elsewhere import LedgersElsewhere

                elsewhere = opened.enter_context(closing(LedgersElsewhere(settings.other_ledgers)))
            result = validate_job(
                storage,
                source,
                settings,
                preflight=preflight,
                preflight_counts=counts,
                open_ledger=lambda: opened.enter_context(closing(ledger_from(settings))),
                execution=execution,
                elsewhere=elsewhere,
            )
    except Exception:
        logger.exception("Validation failed")
        raise
    logger.info("Recipients validated", campaign=result["campaign"]["id"], **result["counts"])
    if result["warnings"]:  # column names, no addresses
        logger.warning("Header warnings", warnings=result["warnings"])
    return result
