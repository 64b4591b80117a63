"""SendBatch: render and send each row of one Distributed Map batch, once, through the ledger."""

from __future__ import annotations

import functools
import threading
import time
from contextlib import closing, nullcontext
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from mailmatrix.adapters.wiring import ledger_from, mailer_from, row_reserve_s, storage_for
from mailmatrix.core.payload import RESULT_BUDGET_BYTES, fit_batch_result, result_size
from mailmatrix.core.report import SUPERSEDED
from mailmatrix.core.templates import Catalog
from mailmatrix.errors import ConfigurationError
from mailmatrix.events import BY_THE_STATE_MACHINE, EventShape
from mailmatrix.jobs import listing_signature, load_templates, send_job
from mailmatrix.ports import Ledger, Mailer
from mailmatrix.settings import Settings

if TYPE_CHECKING:
    from mailmatrix.adapters.ledgers_elsewhere import LedgersElsewhere

logger = Logger(service="mailmatrix")

SEND_BATCH = EventShape(
    what="a SendBatch event (a batch of the state machine's Map)",
    error=ConfigurationError,
    after=f"nothing was sent. {BY_THE_STATE_MACHINE}",
)


_warm: dict[Settings, tuple[Mailer, Ledger]] = {}
_warm_lock = threading.Lock()


def _adapters(settings: Settings) -> tuple[Mailer, Ledger]:
    """Mailer and ledger, kept warm across invocations of one Lambda container.

    Built once per settings even when local batches start in several threads at once (a
    drill's crash-after counter must be one per run, not one per thread).
    """
    with _warm_lock:
        if settings not in _warm:
            _warm[settings] = (mailer_from(settings), ledger_from(settings))
        return _warm[settings]


def _ledgers_elsewhere(settings: Settings) -> LedgersElsewhere | None:
    """The other workdirs' ledgers a local run names (MAILMATRIX_OTHER_LEDGERS), opened for
    one batch, live: each sees the letters its workdir's runs send meanwhile, and a batch
    asks the ledger as it is then, never one kept from an earlier batch (None: none named).
    Through a mail server, one that cannot be read stops the batch (LedgerError, retried);
    into the outbox (a trial, which mails nobody) it is left out, as validation warned."""
    if not settings.other_ledgers:
        return None
    from mailmatrix.adapters.ledgers_elsewhere import LedgersElsewhere

    strict = not settings.into_outbox
    return LedgersElsewhere(settings.other_ledgers, live=True, strict=strict)


@functools.lru_cache(maxsize=8)
def _catalog(settings: Settings, bucket: str, prefix: str, signature: tuple) -> Catalog:
    """Templates, reloaded only when the listing under ``prefix`` changes."""
    return load_templates(storage_for(settings, bucket), prefix)


def reset() -> None:
    """Close and forget the warm adapters, forget the templates (a local run ends, a test)."""
    with _warm_lock:
        warm = list(_warm.values())
        _warm.clear()
    for mailer, ledger in warm:
        mailer.close()
        ledger.close()
    _catalog.cache_clear()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Send the batch ``{"BatchInput": {"campaign": ...}, "Items": [...], "owner": ARN}``.

    ``owner`` is the child execution's id: a retry of the same child takes over the ledger
    claims its predecessor left. Step Functions can start that retry while the predecessor
    still runs (a lost Lambda reply, a redrive after an abort), so each invocation holds the
    batch in the ledger for its run (its request id) and a second one meanwhile raises
    ClaimBusy, which the state machine retries until the first has ended or timed out.
    The result keeps every row; its reasons are shortened when it would not fit in a state.
    """
    settings = Settings.from_env()
    campaign = SEND_BATCH.part(event, "BatchInput.campaign", dict)
    items = SEND_BATCH.part(event, "Items", list)
    bucket = SEND_BATCH.part(event, "BatchInput.campaign.source.bucket", str)
    prefix = SEND_BATCH.part(event, "BatchInput.campaign.templates_prefix", str)
    owner = SEND_BATCH.part(event, "owner", str, optional=True)
    campaign_id = SEND_BATCH.part(event, "BatchInput.campaign.id", str)
    logger.append_keys(campaign=campaign_id, rows=len(items))
    storage = storage_for(settings, bucket)
    catalog = _catalog(settings, storage.bucket, prefix, listing_signature(storage.list(prefix)))
    mailer, ledger = _adapters(settings)

    elsewhere = _ledgers_elsewhere(settings)
    try:
        with closing(elsewhere) if elsewhere is not None else nullcontext():
            result = send_job(
                items,
                campaign,
                storage=storage,
                catalog=catalog,
                mailer=mailer,
                ledger=ledger,
                attempt=owner or context.aws_request_id,
                deadline=time.time() + context.get_remaining_time_in_millis() / 1000,
                invocation=context.aws_request_id,
                reserve_s=row_reserve_s(settings),
                elsewhere=elsewhere,
            )
    except Exception as error:
        logger.warning("Batch stopped", error=type(error).__name__, reason=str(error)[:300])
        raise
    logger.info(
        "Batch sent", sent=result["sent"], skipped=result["skipped"], failed=result["failed"]
    )
    for row in result.get("rows") or []:  # given up: for the operator's log (no address)
        if row.get("status") == "failed" and row.get("code") != SUPERSEDED:
            logger.warning("Row given up", row=row.get("row"), code=row.get("code"))
    fitted = fit_batch_result(result)
    if fitted is not result:
        size = result_size(fitted)
        if size > RESULT_BUDGET_BYTES:  # no text left to cut: the state may refuse it
            logger.warning("Batch result over budget", bytes=size, budget=RESULT_BUDGET_BYTES)
        else:
            logger.info("Batch result reasons shortened", bytes=size)
    return fitted
