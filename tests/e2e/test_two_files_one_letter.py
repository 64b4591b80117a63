"""Two files naming the same people's own PDFs to different people, run at the same moment.

A colleague's copy of offers.csv (offers-final.csv) has its Attachment_File cells shifted by
a row: each PDF that offers.csv names for one person, it names for another. Both files are
validated before either run sends anything, so validation finds nothing against them; the
second file's batch runs while the first's mailer sends its first row. The real
validate_job and send_job run as the Lambda handlers do, on S3 and SES in moto, with each
ledger: the claims alone keep each PDF to one person.
"""

from __future__ import annotations

import csv
import functools
import io
from email import message_from_bytes
from typing import Any

import boto3
from moto.ses.models import ses_backends

from mailmatrix.adapters.mailer_ses import SesMailer
from mailmatrix.core.send import RetryPolicy, send_batch
from mailmatrix.errors import ClaimBusy
from mailmatrix.jobs import load_templates, send_job
from tests.e2e.test_aws_adapters_e2e import ACCOUNT, EXAMPLE, REGION
from tests.e2e.test_other_letter_race import validated


def _offers() -> tuple[bytes, bytes]:
    """offers.csv (the example's first four offers, each with its person's PDF) and
    offers-final.csv (the same rows, each PDF named for the next row's person)."""
    text = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8")
    header, *rows = list(csv.reader(io.StringIO(text)))
    offers = [row for row in rows if row[2] == "Offer"][:4]
    files = [row[3] for row in offers]
    shifted = [[*row[:3], files[(at + 1) % 4], *row[4:]] for at, row in enumerate(offers)]
    return _csv(header, offers), _csv(header, shifted)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue().encode()


def test_two_files_run_at_once_send_each_persons_pdf_to_one_person(setting, monkeypatch):
    # GIVEN offers.csv and offers-final.csv (each PDF named for another person), both
    # validated before either run sends
    account, storage, ledger = setting
    first_file, second_file = _offers()
    # (the PDFs are named after their people, which validation holds against rows of others:
    # with that check off, as for files named otherwise, the claims alone must keep them)
    manifest = storage.get("templates/manifest.yaml").decode()
    storage.put("templates/manifest.yaml", ("check_file_names: false\n" + manifest).encode())
    campaign_1, rows_1 = validated(account, storage, ledger, first_file, "arn:x:exec1")
    campaign_2, rows_2 = validated(
        account, storage, ledger, second_file, "arn:x:exec2", "incoming/offers-final.csv"
    )
    # (every row of both passed on: nothing was recorded yet to hold one back)
    assert campaign_1["id"] != campaign_2["id"] and len(rows_1) == len(rows_2) == 4
    catalog = load_templates(storage, "templates/")
    ses = SesMailer(None, boto3.client("sesv2", region_name=REGION))
    monkeypatch.setattr(  # no campaign re-read within these few rows
        "mailmatrix.jobs.send_batch",
        functools.partial(send_batch, policy=RetryPolicy(halt_check_s=3600)),
    )

    def send_second(attempt: str) -> dict[str, Any]:
        try:
            return send_job(
                rows_2,
                campaign_2,
                storage=storage,
                catalog=catalog,
                mailer=ses,
                ledger=ledger,
                attempt=attempt,
                invocation=attempt,
            )
        except ClaimBusy as busy:  # a row waits for the first run's letter being sent
            return {**busy.details["result"], "deferred": busy.details["deferred"]}

    second: dict[str, Any] = {}

    class FirstRunMailer:
        """The first run's mailer: the second run's batch runs while it sends its first row."""

        def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
            if not second:
                second.update(send_second("arn:x:exec2/SendEmails:child-1"))
            return ses.send(raw, sender=sender, destinations=destinations)

    # WHEN the first run's batch sends, the second's running meanwhile, and the second's
    # rows left waiting are tried again once the first run has ended
    first = send_job(
        rows_1,
        campaign_1,
        storage=storage,
        catalog=catalog,
        mailer=FirstRunMailer(),
        ledger=ledger,
        attempt="arn:x:exec1/SendEmails:child-1",
        invocation="req-1",
    )
    # (offers-final.csv's row naming Amelia's PDF waited while it was being sent to her, and
    # so did its row of Amelia's own offer, the same set to her address)
    (named,) = [r["row"] for r in rows_2 if r["attachment"] == "amelia-hart.pdf"]
    (hers,) = [r["row"] for r in rows_2 if r["email"] == rows_1[0]["email"]]
    assert second["deferred"] == sorted([hers, named])
    waiting = [row for row in second["rows"] if row["row"] == named]
    assert waiting[0]["status"] == "busy"
    assert "being sent to another recipient under offers.csv" in waiting[0]["reason"]
    retried = send_second("arn:x:exec2/SendEmails:child-1")

    # THEN no PDF reached two people, and nobody got two offers (the same set to one
    # address under another file is held back: "SentUnder")
    sent = ses_backends[ACCOUNT][REGION].sent_messages
    pdfs = [(m.destinations[0], _pdf_name(m.raw_data)) for m in sent]
    names = [name for _, name in pdfs]
    people = [person for person, _ in pdfs]
    assert len(names) == len(set(names)) and len(people) == len(set(people)), pdfs
    # AND every row of either run went out once, or was held back as its person's offer
    # went under the other file, or was refused naming the other file and its row, as
    # validation would have
    rows = first["rows"] + retried["rows"]
    refused = [r for r in rows if r["status"] == "failed"]
    held = [r for r in rows if r["status"] == "skipped"]
    assert {r["code"] for r in refused} == {"AttachmentOfAnother"}
    assert {r["code"] for r in held} == {"SentUnder"}
    assert len(sent) + len(refused) + len(held) == len(rows) == 8
    (amelia_pdf,) = [r for r in retried["rows"] if r["row"] == named]
    assert amelia_pdf["reason"].startswith(
        "amelia-hart.pdf was sent to another recipient (a***@example.com) under offers.csv"
        f" (campaign {campaign_1['id']}) as their own letter (row 2 of that run), so it is not"
        " sent to this recipient"
    )
    for row in refused:
        other = "offers-final.csv" if row in first["rows"] else "offers.csv"
        assert f"under {other} (campaign " in row["reason"] and "(row " in row["reason"]
    # (the retry reports the rows its first try sent as sent)
    assert (first["sent"], second["sent"]) == (1, retried["sent"])


def _pdf_name(raw: str) -> str:
    """The file name of the PDF a sent message carries."""
    message = message_from_bytes(raw.encode() if isinstance(raw, str) else raw)
    (name,) = [p.get_filename() for p in message.walk() if p.get_filename()]
    return str(name)
