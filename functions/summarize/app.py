"""Summarize: fold the Map Run's results into counts, write the report, return the summary."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from aws_lambda_powertools import Logger

from mailmatrix.adapters.wiring import ledger_from, storage_for
from mailmatrix.jobs import summarize_job
from mailmatrix.settings import Settings

logger = Logger(service="mailmatrix")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Summarize ``{campaign, counts, send, execution}``."""
    settings = Settings.from_env()
    campaign = event["campaign"]
    logger.append_keys(campaign=campaign["id"], execution=event.get("execution"))
    storage = storage_for(settings, campaign["source"]["bucket"])
    with closing(ledger_from(settings)) as ledger:
        result = summarize_job(
            storage,
            campaign,
            event["counts"],
            event.get("send") or {},
            event.get("execution", ""),
            ledger=ledger,
            scratch=settings.scratch,
        )
    logger.info("Campaign summarized", outcome=result["outcome"], **result["counts"])
    return result
