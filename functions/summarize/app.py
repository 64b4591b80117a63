"""Summarize: fold the Map Run's results into counts, write the report, return the summary."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from aws_lambda_powertools import Logger

from mailmatrix.adapters.wiring import ledger_from, storage_for
from mailmatrix.errors import ConfigurationError
from mailmatrix.events import BY_THE_STATE_MACHINE, EventShape
from mailmatrix.jobs import summarize_job
from mailmatrix.settings import Settings

logger = Logger(service="mailmatrix")

SUMMARIZE = EventShape(
    what="a Summarize event (the campaign, its counts and its Map Run)",
    error=ConfigurationError,
    after=f"no report was written (the letters sent stay sent). {BY_THE_STATE_MACHINE}",
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Summarize ``{campaign, counts, send, execution}``."""
    settings = Settings.from_env()
    campaign = SUMMARIZE.part(event, "campaign", dict)
    execution = SUMMARIZE.part(event, "execution", str, optional=True) or ""
    logger.append_keys(campaign=SUMMARIZE.part(event, "campaign.id", str), execution=execution)
    storage = storage_for(settings, SUMMARIZE.part(event, "campaign.source.bucket", str))
    counts = SUMMARIZE.part(event, "counts", dict)
    send = SUMMARIZE.part(event, "send", dict, optional=True) or {}
    with closing(ledger_from(settings)) as ledger:
        result = summarize_job(
            storage,
            campaign,
            counts,
            send,
            execution,
            ledger=ledger,
            scratch=settings.scratch,
        )
    logger.info("Campaign summarized", outcome=result["outcome"], **result["counts"])
    return result
