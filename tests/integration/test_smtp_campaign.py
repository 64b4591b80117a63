"""The demo campaign through the real state machine, delivered to an SMTP server on loopback.

What `mailmatrix run --smtp smtp://127.0.0.1:PORT` does, checked at the server: one message
per valid row, each with its own PDF, and nothing at all on a second run of the same file.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import email
import email.policy
import json
import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fast_mail_parser
import pytest
from aiosmtpd.controller import Controller

from mailmatrix.core.message import envelope_address
from mailmatrix.local import REPO, run_campaign

EXAMPLE = REPO / "examples" / "offer-letters"
HOST = "127.0.0.1"


class Inbox:
    """Keeps every envelope the server accepted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued"


def _free_port() -> int:
    """A loopback port this test bound and let go: nothing listens on it."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_inbox():
    inbox = Inbox()
    with serving(inbox) as url:
        yield inbox, url


@pytest.fixture
def other_inbox():
    """A second server: a backup relay, or a mail catcher for rehearsals."""
    inbox = Inbox()
    with serving(inbox) as url:
        yield inbox, url


@contextlib.contextmanager
def serving(handler: Any) -> Iterator[str]:
    """An SMTP server on a loopback port with ``handler``; its URL."""
    port = _free_port()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    try:
        yield f"smtp://{HOST}:{port}"
    finally:
        controller.stop()


def demo_rows() -> dict[str, dict[str, str]]:
    with (EXAMPLE / "recipients.csv").open(encoding="utf-8", newline="") as stream:
        # keyed by the address as it travels: IDN domains in Punycode
        return {
            envelope_address(row["Email"], where="test"): row
            for row in csv.DictReader(stream)
            if "@" in row["Email"]
        }


def test_demo_campaign_over_smtp_once_and_only_once(smtp_inbox, tmp_path: Path):
    inbox, url = smtp_inbox
    rows = demo_rows()

    # GIVEN the demo campaign WHEN it runs with the SMTP mailer
    run_campaign(EXAMPLE / "recipients.csv", workdir=tmp_path / "work", mailer=url)

    # THEN the server got one message per valid row (the demo has two bad rows)
    received = {rcpts[0]: (sender, rcpts, raw) for sender, rcpts, raw in inbox.envelopes}
    assert len(inbox.envelopes) == len(received) == len(rows) - 2
    assert set(received) <= set(rows)
    for address, (sender, rcpts, raw) in received.items():
        row = rows[address]
        assert sender == "talent@example.com"
        assert rcpts == [address]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
            (row["Name"], address)
        ]
        pdf = (EXAMPLE / "attachments" / row["Attachment_File"]).read_bytes()
        other = fast_mail_parser.parse_email(raw)
        assert [(a.filename, bytes(a.content)) for a in other.attachments] == [
            (row["Attachment_File"], pdf)
        ]
        expected = "Your offer from" if row["Status"] == "Offer" else "Your application for"
        assert str(msg["Subject"]).startswith(expected) and other.subject == msg["Subject"]

    # WHEN the identical file runs again THEN nothing more reaches the server
    run_campaign(EXAMPLE / "recipients.csv", workdir=tmp_path / "work", mailer=url)
    assert len(inbox.envelopes) == len(received)


def test_a_redrive_of_a_run_through_a_server_says_so_and_how_to_retry_through_it(
    smtp_inbox, tmp_path: Path
):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN a run through the server that the daily quota stops (the drill: 8 messages a
    # process), and whose server refuses some rows for good
    inbox, url = smtp_inbox
    workdir = str(tmp_path / "work")
    csv_file = str(EXAMPLE / "recipients.csv")
    faults = "permanent=0.3,quota-after=8,seed=3"
    first = CliRunner().invoke(
        cli, ["run", csv_file, "--workdir", workdir, "--smtp", url, "--json", "--faults", faults]
    )
    execution = json.loads(first.stdout)["execution"]

    # WHEN it is redriven until it ends
    for _ in range(5):
        redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])
        if "Daily message quota exceeded" not in redriven.output:
            break
    output = redriven.output.replace("\n", "")

    # THEN the last redrive names the server it delivered through, not the empty outbox
    assert redriven.exit_code == 5, output
    assert f"Mail server: {url}" in output and "Outbox:" not in output
    assert inbox.envelopes and not list((tmp_path / "work" / "outbox").rglob("*.*"))
    # AND its retry command runs the same file the same way (a run without --smtp would be
    # refused, or would put the rows in the outbox), named as `run` names it: relative to
    # the current folder when under it
    here = Path.cwd().resolve()
    shown = EXAMPLE.relative_to(here) if EXAMPLE.is_relative_to(here) else EXAMPLE
    assert f"mailmatrix run {shown / 'recipients.csv'} --retry-failed --workdir {workdir}" in output
    assert f"--smtp {url}" in output


def test_a_redrive_that_sends_first_holds_the_file_to_its_server(tmp_path: Path):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN a first run through a mail server that was down (stopped before any row)
    port = _free_port()
    url = f"smtp://{HOST}:{port}"
    workdir = str(tmp_path / "work")
    csv_file = str(EXAMPLE / "recipients.csv")
    down = CliRunner().invoke(cli, ["run", csv_file, "--workdir", workdir, "--smtp", url, "--json"])
    execution = json.loads(down.stdout)["execution"]

    # WHEN the server is up and the execution is redriven, its rows going out through it
    inbox = Inbox()
    controller = Controller(inbox, hostname=HOST, port=port)
    controller.start()
    try:
        redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])
    finally:
        controller.stop()
    assert redriven.exit_code == 0, redriven.output
    assert len(inbox.envelopes) == 18

    # THEN a later run of the file into the outbox is refused: the rows went to the server
    later = CliRunner().invoke(cli, ["run", csv_file, "--workdir", workdir, "--retry-failed"])
    assert later.exit_code == 2, later.output
    assert f"delivered through --smtp {url}" in later.output.replace("\n", "")
    assert not list((tmp_path / "work" / "outbox").rglob("*.*"))


def test_a_file_sent_through_one_server_may_go_on_through_another(smtp_inbox, tmp_path: Path):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN the demo campaign sent through one mail server, where the quota stopped it
    _, url = smtp_inbox
    workdir = str(tmp_path / "work")
    csv_file = str(EXAMPLE / "recipients.csv")
    args = ["run", csv_file, "--workdir", workdir]
    CliRunner().invoke(cli, [*args, "--smtp", url, "--faults", "quota-after=5"])

    # WHEN it runs again through a backup relay THEN that is no change of delivery (both
    # deliver): it is not refused as one, as a run into the outbox is
    relay = f"smtp://{HOST}:{_free_port()}?timeout=2"
    backup = CliRunner().invoke(cli, [*args, "--smtp", relay])
    assert "earlier runs of a file named" not in backup.output, backup.output
    outbox = CliRunner().invoke(cli, args)
    assert outbox.exit_code == 2
    assert "earlier runs of a file named" in outbox.output


def test_a_failed_runs_summary_names_its_mail_server_and_the_reports_written(
    smtp_inbox, tmp_path: Path
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli
    from mailmatrix.cli.run_cmd import NO_REPORT

    # GIVEN the demo campaign (two rows rejected) through a mail server
    _, url = smtp_inbox
    workdir = tmp_path / "work"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--smtp", url]

    # WHEN a quota drill fails it after three messages
    failed = CliRunner().invoke(cli, [*args, "--faults", "quota-after=3"])

    # THEN its summary says where the letters went and names the rejects report it wrote, as
    # a successful run's does, each on a line of its own; no report.csv was written (the
    # summary was never reached), and it says so
    assert failed.exit_code == 1, failed.output
    lines = failed.output.splitlines()
    assert "The run failed:" in failed.output
    assert f"Mail server: {url}" in lines
    (rejects,) = workdir.glob("bucket/reports/*/*/rejects.csv")
    assert f"Rejects: {rejects}" in lines
    assert not list(workdir.glob("bucket/reports/*/*/report.csv"))
    assert [line for line in lines if line.startswith("Report:")] == [f"Report:  {NO_REPORT}"]


def test_a_rerun_that_forgot_smtp_is_told_first_to_add_it(smtp_inbox, tmp_path: Path):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN the demo campaign sent through a mail server
    inbox, url = smtp_inbox
    workdir = tmp_path / "work"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    assert CliRunner().invoke(cli, [*args, "--smtp", url]).exit_code == 0

    # WHEN it runs again without --smtp
    forgot = CliRunner().invoke(cli, args)

    # THEN it is refused, nothing going to the outbox, leading with the server the earlier
    # runs delivered through and the option to add; the new file name comes after
    assert forgot.exit_code == 2
    said = " ".join(forgot.output.split())
    assert (
        f"recipients.csv: the earlier runs of a file named recipients.csv in {workdir}"
        f" delivered through --smtp {url}, but this run gave no --smtp (the local outbox)."
        " Nothing was sent. To go on with that campaign (a rerun, or its file corrected), run"
        f" it again with --smtp {url}: rows already sent are skipped. Only if this file is"
        " really a different campaign "
    ) in said
    assert not list((workdir / "outbox").rglob("*.*"))
    # AND with it, the run goes on, sending no one again
    again = CliRunner().invoke(cli, [*args, "--smtp", url])
    assert again.exit_code == 0, again.output
    assert len(inbox.envelopes) == 18


class DailyQuota(Inbox):
    """Takes ``left`` messages, then answers each as a server whose daily quota is used up."""

    def __init__(self, left: int) -> None:
        super().__init__()
        self.left = left
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if len(self.envelopes) >= self.left:
                self.refused += 1
                return "452 4.3.1 Daily message quota exceeded"
        return await super().handle_DATA(server, session, envelope)


def test_validate_says_what_run_would_do_while_the_servers_quota_halt_holds(tmp_path: Path):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN the demo campaign (18 valid rows) stopped by the server's daily quota after 4
    quota = DailyQuota(4)
    port = _free_port()
    controller = Controller(quota, hostname=HOST, port=port)
    controller.start()
    workdir = str(tmp_path / "work")
    csv_file = str(EXAMPLE / "recipients.csv")
    run = ["run", csv_file, "--workdir", workdir, "--smtp", f"smtp://{HOST}:{port}"]
    validate = ["validate", csv_file, "--workdir", workdir]
    try:
        first = CliRunner().invoke(cli, [*run, "--json"])
        assert first.exit_code == 1, first.output
        assert len(quota.envelopes) == 4

        # WHEN it is validated against the workdir, within the halt's hold
        checked = CliRunner().invoke(cli, validate)
        earlier = json.loads(CliRunner().invoke(cli, [*validate, "--json"]).stdout)["earlier_runs"]

        # THEN it says the 4 sent are skipped, 14 would be sent, but not now: the halt holds
        # the file's runs, and it exits as run does (it said "the 18 valid row(s) would be
        # sent", exit 4)
        said = " ".join(checked.output.split())
        assert checked.exit_code == 1, said
        assert "14 of the 18 valid row(s) would be sent." in said
        assert "4 row(s) were sent by earlier runs of this file: `run` skips them." in said
        assert "452 4.3.1 Daily message quota exceeded); the halt holds the file's runs" in said
        assert "(`run` stops at once, sending nothing)" in said
        assert (earlier["sent_before"], earlier["would_send"]) == (4, 14)
        assert earlier["halt"]["holds"] is True
        assert 0 < earlier["halt"]["holds_for_seconds"] <= 60
        assert "Daily message quota exceeded" in earlier["halt"]["reason"]

        # AND the run fails at once, as it said, without asking the server
        refused = quota.refused
        again = CliRunner().invoke(cli, [*run, "--json"])
        assert again.exit_code == 1, again.output
        assert (len(quota.envelopes), quota.refused) == (4, refused)
    finally:
        controller.stop()


def _demo_with(tmp_path: Path, header: str, row: str) -> Path:
    """The demo's first row under ``header`` and the row ``row``, with the demo's letters
    beside them."""
    folder = tmp_path / "campaign"
    shutil.copytree(EXAMPLE / "attachments", folder / "attachments")
    first = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()[1]
    path = folder / "mine.csv"
    path.write_text(f"{header}\n{first}\n{row}\n", encoding="utf-8")
    return path


DEMO_HEADER = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary"
REAL_ROW = "jo@gmail.com,Jo Real,Offer,jose-garcia.pdf,Backend Developer,Platform,2027-01-18,1"


@pytest.mark.parametrize(
    ("header", "row", "named"),
    [
        (DEMO_HEADER, REAL_ROW, "Email j***@gmail.com"),
        (DEMO_HEADER.replace("Email", "E-mail Address"), REAL_ROW, "Email j***@gmail.com"),
        (
            f"{DEMO_HEADER},CC",
            "jo@example.org,Jo,Offer,jose-garcia.pdf,Dev,Platform,2027-01-18,1,boss@acme.io",
            "Cc b***@acme.io",
        ),
    ],
    ids=["email", "email-alias", "cc"],
)
@pytest.mark.parametrize("given", [False, True], ids=["default", "named"])
def test_the_bundled_demo_templates_never_go_through_smtp_to_real_people(
    smtp_inbox, tmp_path: Path, header: str, row: str, named: str, given: bool
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli
    from mailmatrix.local import DEFAULT_TEMPLATES

    # GIVEN a file with a recipient at a real domain, and the bundled demo templates (not
    # given, or named as the folder they are)
    inbox, url = smtp_inbox
    path = _demo_with(tmp_path, header, row)
    workdir = tmp_path / "work"
    templates = ["--templates", str(DEFAULT_TEMPLATES)] if given else []

    # WHEN it runs through the SMTP server
    refused = CliRunner().invoke(
        cli, ["run", str(path), "--workdir", str(workdir), "--smtp", url, *templates]
    )

    # THEN it is refused as a bad setting before anything is sent or made, naming the row
    # and saying how to use letters of one's own
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, said
    assert f"mine.csv row 3, {named}" in said
    assert "bundled demo templates" in said and "--templates DIR" in said
    assert inbox.envelopes == [] and not workdir.exists()


def test_the_demo_templates_still_go_to_the_outbox_and_a_copy_of_them_through_smtp(
    smtp_inbox, tmp_path: Path
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli
    from mailmatrix.local import DEFAULT_TEMPLATES

    # GIVEN a file with a recipient at a real domain
    inbox, url = smtp_inbox
    path = _demo_with(tmp_path, DEMO_HEADER, REAL_ROW)

    # WHEN it runs into the outbox with the bundled templates THEN both rows go there, and
    # the summary says which letters they were
    outbox = CliRunner().invoke(cli, ["run", str(path), "--workdir", str(tmp_path / "a")])
    said = " ".join(outbox.output.split())
    assert outbox.exit_code == 0, said
    assert len(list((tmp_path / "a" / "outbox" / "new").iterdir())) == 2
    assert f"Templates: bundled demo templates ({DEFAULT_TEMPLATES})" in said
    assert "From: Acme Talent <talent@example.com>" in said

    # WHEN it runs through the server with a copy of the templates, left as it is or edited
    # (here its manifest's company) while its manifest keeps demo: true THEN it is refused,
    # nothing sent (the demo company's letters, as far as anyone can tell)
    own = tmp_path / "own"
    shutil.copytree(DEFAULT_TEMPLATES, own)
    args = ["--templates", str(own), "--sender", "HR <hr@globex.io>", "--smtp", url]
    manifest = own / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert "Acme Corporation" in text and "\ndemo: true\n" in text
    for edited in (text, text.replace("Acme Corporation", "Globex")):
        manifest.write_text(edited, encoding="utf-8")
        work = str(tmp_path / "c")
        kept = CliRunner().invoke(cli, ["run", str(path), "--workdir", work, *args])
        said = " ".join(kept.output.split())
        assert kept.exit_code == 2, said
        assert "a copy of the bundled demo templates, its manifest.yaml still saying" in said
        assert "delete the line demo: true" in said
        assert inbox.envelopes == []

    # WHEN the copy is made one's own (its company, its contact address, and the demo line
    # deleted) THEN both rows go there
    own_text = text.replace("Acme Corporation", "Globex").replace("\ndemo: true\n", "\n")
    own_text = own_text.replace("contact_email: talent@example.com", "contact_email: hr@globex.io")
    manifest.write_text(own_text, encoding="utf-8")
    sent = CliRunner().invoke(cli, ["run", str(path), "--workdir", str(tmp_path / "b"), *args])
    said = " ".join(sent.output.split())
    assert sent.exit_code == 0, said
    assert sorted(rcpts[0] for _, rcpts, _ in inbox.envelopes) == [
        "amelia.hart@example.com",
        "jo@gmail.com",
    ]
    assert f"Templates: {own} From: HR <hr@globex.io>" in said


@pytest.mark.parametrize("smtp", [True, False], ids=["through-smtp", "to-the-outbox"])
def test_a_rerun_that_forgot_its_own_templates_is_told_them_not_the_demos_advice(
    smtp_inbox, tmp_path: Path, smtp: bool
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli
    from mailmatrix.local import DEFAULT_TEMPLATES

    # GIVEN a file with a recipient at a real domain, sent through a mail server with a copy
    # of the demo templates made one's own (its demo line deleted, its company and sender)
    inbox, url = smtp_inbox
    path = _demo_with(tmp_path, DEMO_HEADER, REAL_ROW)
    own = tmp_path / "my-campaign" / "templates"
    shutil.copytree(DEFAULT_TEMPLATES, own)
    manifest = own / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8").replace("\ndemo: true\n", "\n")
    text = text.replace("talent@example.com", "hr@globex.io").replace("Acme", "Globex")
    manifest.write_text(text, encoding="utf-8")
    args = ["run", str(path), "--workdir", str(tmp_path / "work")]
    first = CliRunner().invoke(cli, [*args, "--templates", str(own), "--smtp", url])
    assert first.exit_code == 0, first.output

    # WHEN it runs again without --templates, with --smtp or without
    rerun = CliRunner().invoke(cli, [*args, "--smtp", url] if smtp else args)

    # THEN it is refused with the folder its earlier runs used, not the demo's advice (the
    # letters are one's own already), and nothing more is sent
    said = " ".join(rerun.output.split())
    assert rerun.exit_code == 2, said
    assert f"used --templates {own}, but this run used the bundled demo templates" in said
    assert f"--templates {own}: rows already sent are skipped" in said
    assert "demo: true" not in said
    assert len(inbox.envelopes) == 2


def test_a_placeholder_among_the_constants_never_goes_through_smtp_to_real_people(
    smtp_inbox, tmp_path: Path
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli
    from mailmatrix.local import DEFAULT_TEMPLATES

    # GIVEN a copy of the demo templates with its line demo: true deleted and a sender of
    # one's own, its constants still the demo's ("Questions? Write to talent@example.com"),
    # and a file with a recipient at a real domain
    inbox, url = smtp_inbox
    path = _demo_with(tmp_path, DEMO_HEADER, REAL_ROW)
    own = tmp_path / "own"
    shutil.copytree(DEFAULT_TEMPLATES, own)
    manifest = own / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8").replace("\ndemo: true\n", "\n")
    manifest.write_text(text, encoding="utf-8")
    args = ["--templates", str(own), "--sender", "HR <hr@globex.io>"]

    # WHEN it runs through the SMTP server
    work = tmp_path / "real"
    refused = CliRunner().invoke(
        cli, ["run", str(path), "--workdir", str(work), "--smtp", url, *args]
    )

    # THEN it is refused before anything is sent or made, naming the constant, the row of a
    # real person, and what to do
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, said
    assert (
        f"mailmatrix run: templates: the constant contact_email under 'context' in {manifest}"
        " holds talent@example.com, a placeholder at a domain reserved for examples: the"
        " letters would tell their readers to write to an address nobody reads, and --smtp"
        f" {url} would deliver them to real people (mine.csv row 3, Email j***@gmail.com);"
        " nothing was sent. Write an address of yours there (or delete contact_email, if no"
        " template prints it), then run the file again."
    ) in said
    assert inbox.envelopes == [] and not work.exists()

    # AND only through a server, to real people
    said = _refused_only_through_a_server(path, args, smtp_inbox, "PlaceholderConstant")
    assert "the constant contact_email under 'context'" in said


@pytest.mark.parametrize("given", [False, True], ids=["manifest", "--sender"])
def test_a_placeholder_sender_never_goes_through_smtp_to_real_people(
    smtp_inbox, tmp_path: Path, given: bool
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli
    from mailmatrix.local import DEFAULT_TEMPLATES

    # GIVEN a copy of the demo templates with only its line demo: true deleted, so its sender
    # is still the demo's placeholder (or one given at a domain reserved for examples), and a
    # file with a recipient at a real domain
    inbox, url = smtp_inbox
    path = _demo_with(tmp_path, DEMO_HEADER, REAL_ROW)
    own = tmp_path / "own"
    shutil.copytree(DEFAULT_TEMPLATES, own)
    manifest = own / "manifest.yaml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("\ndemo: true\n", "\n"), encoding="utf-8"
    )
    sender = ["--sender", "HR <hr@acme.example>"] if given else []
    args = ["--templates", str(own), *sender]

    # WHEN it runs through the SMTP server
    work = tmp_path / "real"
    refused = CliRunner().invoke(
        cli, ["run", str(path), "--workdir", str(work), "--smtp", url, *args]
    )

    # THEN it is refused before anything is sent or made, saying that the sender is a
    # placeholder, which row names a real person, and where to set one's own
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, said
    address, origin = (
        ("hr@acme.example", "--sender or MAILMATRIX_SENDER")
        if given
        else ("talent@example.com", f"'sender' in {manifest}")
    )
    assert (
        f"mailmatrix run: sender: the From address {address} ({origin}) is a placeholder at a"
        " domain reserved for examples, not an address of yours: real mail servers would bounce"
        f" these letters or mark them as spoofed, and --smtp {url} would deliver them to real"
        " people (mine.csv row 3, Email j***@gmail.com); nothing was sent."
    ) in said
    assert ("with --sender" if given else f"as 'sender' in {manifest}") in said
    assert inbox.envelopes == [] and not work.exists()

    # AND only through a server, to real people
    _refused_only_through_a_server(path, args, smtp_inbox, "PlaceholderSender")


def _refused_only_through_a_server(
    path: Path, args: list[str], smtp_inbox: tuple[Inbox, str], error: str
) -> str:
    """Check that the file ``path`` (mine.csv: a row of the demo, and row 3 to a real person),
    refused through the SMTP server with ``args`` as ``error``, is refused only there:
    `validate` says `run --smtp` would refuse it, rather than "All good", and exits 0 as `run`
    into the outbox succeeds; the trial into the outbox takes both rows, and a rehearsal
    through the server to addresses at domains reserved for examples only goes. Returns what
    `validate` said."""
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    checked = CliRunner().invoke(cli, ["validate", str(path), *args])
    said = " ".join(checked.output.split())
    assert checked.exit_code == 0, said
    assert "All good" not in said
    # (saying plainly which run its exit status is for, and that a server run is refused)
    assert (
        "Outbox only: the 2 valid row(s) would be sent into the outbox by `run` without --smtp,"
        " a trial, and validate exits as that run would; `run --smtp` would be refused (below)."
    ) in said
    assert (
        f"`run --smtp` would refuse this file ({error}), sending nothing; `run` into the outbox"
        " goes:"
    ) in said
    assert "(mine.csv row 3, Email j***@gmail.com)" in said

    trials = path.parent / "trials"
    trial = CliRunner().invoke(cli, ["run", str(path), "--workdir", str(trials / "t"), *args])
    assert trial.exit_code == 0, trial.output
    assert len(list((trials / "t" / "outbox" / "new").iterdir())) == 2

    rehearsal = path.with_name("rehearsal.csv")
    rehearsal.write_text(
        path.read_text(encoding="utf-8").replace("jo@gmail.com", "jo@example.net"),
        encoding="utf-8",
    )
    work = str(trials / "r")
    sent = CliRunner().invoke(cli, ["run", str(rehearsal), "--workdir", work, "--smtp", url, *args])
    assert sent.exit_code == 0, sent.output
    assert sorted(rcpts[0] for _, rcpts, _ in inbox.envelopes) == [
        "amelia.hart@example.com",
        "jo@example.net",
    ]
    return said


class NotNow(Inbox):
    """Answers every RCPT "not now" (a greylisting or paused server) until ``taking``."""

    def __init__(self) -> None:
        super().__init__()
        self.taking = False
        self.refused = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            if not self.taking:
                self.refused += 1
                return "450 4.3.2 Service currently unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_server_refusing_all_mail_for_now_stops_the_run_after_three_rows(tmp_path: Path):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN a server that answers "not now" to every recipient
    server = NotNow()
    port = _free_port()
    controller = Controller(server, hostname=HOST, port=port)
    controller.start()
    workdir = str(tmp_path / "work")
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", workdir]
    run += ["--smtp", f"smtp://{HOST}:{port}", "--json"]
    try:
        # WHEN the demo campaign (18 valid rows) runs through it
        first = CliRunner().invoke(cli, run)

        # THEN it stops after every try of three rows (5 each), not every try of all 18 in
        # every retry of the batch, and says when to go on
        result = json.loads(first.stdout)
        assert first.exit_code == 1, first.output
        assert (server.refused, len(server.envelopes)) == (15, 0)
        assert result["counts"]["sent"] == 0
        assert result["redrive_advice"].startswith("the mail service took no message for now")

        # WHEN the server takes mail again and the run is redriven
        server.taking = True
        again = CliRunner().invoke(cli, ["redrive", result["execution"], "--workdir", workdir])

        # THEN every valid row goes out, once
        assert again.exit_code == 0, again.output
        assert len({tuple(rcpts) for _, rcpts, _ in server.envelopes}) == 18
        assert len(server.envelopes) == 18
    finally:
        controller.stop()


class UnknownUser(Inbox):
    """Refuses one recipient for good, quoting its address in full as Postfix does."""

    def __init__(self, unknown: str) -> None:
        super().__init__()
        self.unknown = unknown

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.unknown:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_refused_recipients_reason_masks_the_address_the_server_quoted(tmp_path: Path):
    # GIVEN a server that refuses the demo's first recipient, naming the address
    with serving(UnknownUser("amelia.hart@example.com")) as url:
        # WHEN the demo campaign runs through it
        ran = _runner(str(EXAMPLE / "recipients.csv"))(tmp_path / "work", "--smtp", url)

    # THEN the row fails with the server's words, the address in them masked as the row's
    # is, in the printed summary, the report and the ledger alike
    port = url.rpartition(":")[2]
    reason = (
        f"smtp {HOST}:{port}: recipient a***@example.com refused: 550 5.1.1"
        " <a***@example.com>: Recipient address rejected: User unknown"
    )
    assert ran.exit_code == 5, ran.output
    assert f"row 2 [550]: {reason}" in " ".join(ran.output.split())
    assert "amelia.hart@" not in ran.output
    (report,) = (tmp_path / "work" / "bucket" / "reports").glob("*/*/report.csv")
    with report.open(encoding="utf-8-sig", newline="") as stream:
        failed = [row for row in csv.DictReader(stream) if row["status"] == "failed"]
    assert [(row["row"], row["code"], row["reason"]) for row in failed] == [("2", "550", reason)]
    with contextlib.closing(sqlite3.connect(tmp_path / "work" / "ledger.sqlite3")) as ledger:
        reasons = ledger.execute("SELECT reason FROM sends WHERE state = 'failed'").fetchall()
    assert reasons == [(reason,)]


class TakesWithoutAnswering(Inbox):
    """Keeps each message, then drops the connection instead of answering it."""

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        server.transport.close()
        return "250 never heard"


@pytest.mark.parametrize("batch_size", ["10", "1"], ids=["batches-of-10", "batches-of-one-row"])
def test_a_server_taking_mail_without_answering_gets_a_few_copies_all_of_them_marked(
    tmp_path: Path, batch_size: str
):
    import json

    # GIVEN a server that keeps every message without ever answering it
    server = TakesWithoutAnswering()
    with serving(server) as url:
        # WHEN the demo campaign (18 valid rows) runs through it, two batches at once
        ran = _runner(str(EXAMPLE / "recipients.csv"))(
            tmp_path / "work",
            "--smtp",
            url,
            "--batch-size",
            batch_size,
            "--concurrency",
            "2",
            "--json",
        )

    # THEN the run stops (not two copies of every row): the rows in a row unanswered are
    # counted across batches, so each of the two batches at once sends 3 copies at most
    # before the halt stops it (two of its first row's, one of the next row's), whatever
    # the batches' size
    result = json.loads(ran.stdout)
    assert ran.exit_code == 1, ran.output
    copies = collections.Counter(rcpts[0] for _, rcpts, _ in server.envelopes)
    assert 3 <= len(server.envelopes) <= 6
    assert max(copies.values()) == 2
    # AND every recipient who got a message has their row failed as OutcomeUnknown, for a
    # person to check, and the summary gives the command that sends those rows
    assert result["counts"]["unknown"] == result["counts"]["failed"] == len(copies)
    assert result["counts"]["sent"] == 0
    assert "--retry-unknown" in result["retry_unknown_command"]
    assert "retry_command" not in result  # --retry-failed would leave them out
    assert result["redrive_advice"].startswith(
        "the mail server took messages without confirming them"
    )


def _runner(csv_file: str):
    """`mailmatrix run csv_file --workdir WORKDIR ...` through the CLI."""
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    def run(workdir: Path | str, *more: str):
        return CliRunner().invoke(cli, ["run", csv_file, "--workdir", str(workdir), *more])

    return run


def test_a_login_given_to_a_server_that_takes_none_says_to_leave_it_out(smtp_inbox, tmp_path):
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))
    with_login = url.replace("smtp://", "smtp://hr:secret@")
    workdir = tmp_path / "work"

    # GIVEN a server that offers no SMTP AUTH WHEN a run logs in to it
    refused = run(workdir, "--smtp", with_login)

    # THEN nothing is sent, said in words first, and the fix is to leave the login out, not
    # to mend the password
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1
    assert inbox.envelopes == []
    assert "Nothing was sent: the mail service will not take this run's mail (" in said
    assert f"{url[len('smtp://') :]}: login: the server offers no SMTP AUTH: it takes no" in said
    assert "Run the file again with the --smtp URL without its user:password@" in said
    # (the password in the URL is warned of once, before: the refusal does not ask for one)
    assert said.count("the --smtp URL carries a password") == 1
    assert "MAILMATRIX_SMTP_PASSWORD" not in said.split("Nothing was sent", 1)[1]
    assert "secret" not in said
    # AND run so, the file goes out
    assert run(workdir, "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18


def test_show_of_a_run_stopped_before_validation_offers_no_redrive_once_a_newer_run_took_it(
    smtp_inbox, tmp_path
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))
    workdir = tmp_path / "work"
    # GIVEN the file sent, then run again with a login the server does not take: that run
    # stops in validation, before its upload is recorded
    assert run(workdir, "--smtp", url).exit_code == 0
    refused = run(workdir, "--smtp", url.replace("smtp://", "smtp://hr:secret@"), "--json")
    assert refused.exit_code == 1
    show = ["show", json.loads(refused.stdout)["execution"], "--workdir", str(workdir)]

    # WHEN it is shown THEN its redrive is offered: the earlier run's upload is older
    shown = " ".join(CliRunner().invoke(cli, show).output.split())
    assert "redrive: mailmatrix redrive " in shown
    assert "superseded" not in shown

    # WHEN the file then runs again without the login, and the stopped run is shown again
    newer = json.loads(run(workdir, "--smtp", url, "--json").stdout)["execution"]
    shown = " ".join(CliRunner().invoke(cli, show).output.split())

    # THEN it names the newer run, which took its rows, and offers no redrive (that would send
    # nothing)
    assert f"superseded: a newer run of the file sends it, execution {newer}" in shown
    assert f"its rows are the newer run's: mailmatrix show {newer} --workdir {workdir}" in shown
    assert "redrive: " not in shown
    assert len(inbox.envelopes) == 18


def test_a_file_sent_through_a_server_from_one_workdir_is_not_sent_again_from_another(
    smtp_inbox, tmp_path: Path
):
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))
    port = url.rsplit(":", 1)[1]

    # GIVEN the demo campaign sent through the server from one workdir
    sent_from = str(tmp_path / "offers")
    assert run(sent_from, "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18

    # WHEN the same file runs through the same server from another workdir (mistyped), its
    # URL written as before or otherwise
    for written in (url, f"smtp://localhost:{port}", f"smtp://user@127.0.0.1:{port}/"):
        again = run(tmp_path / "offer", "--smtp", written)

        # THEN it is refused before anything is sent, naming the workdir that sent it
        said = " ".join(again.output.split())
        assert again.exit_code == 2, said
        assert f"runs in another workdir, {sent_from}, delivered a file named" in said
        assert "(18 letter(s) of it are recorded sent there)" in said
        assert f"run it there (--workdir {sent_from})" in said
        assert len(inbox.envelopes) == 18

    # AND a trial into the outbox there, and the run from the first workdir, are not held back
    assert run(tmp_path / "offer").exit_code == 0
    assert run(sent_from, "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18


def test_a_ledger_lost_after_sending_through_a_server_refuses_the_file_and_says_the_way_on(
    smtp_inbox, tmp_path: Path
):
    inbox, url = smtp_inbox
    workdir = tmp_path / "offers"
    # GIVEN the demo campaign sent through the server, whose workdir's ledger is then deleted
    assert _runner(str(EXAMPLE / "recipients.csv"))(workdir, "--smtp", url).exit_code == 0
    for path in workdir.glob("ledger.sqlite3*"):
        path.unlink()

    # WHEN the file runs again through the server
    again = _runner(str(EXAMPLE / "recipients.csv"))(workdir, "--smtp", url)

    # THEN it is refused, nothing sent, and the way to mail them again on purpose names the
    # file name as well as the workdir: the server's record holds the name to this workdir
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert "its ledger (ledger.sqlite3) is missing: it has lost the record" in said
    way_on = "run it in a new --workdir under a new file name as well (runs from here delivered"
    assert f"{way_on} recipients.csv through {url}" in said
    assert len(inbox.envelopes) == 18
    # AND from a new workdir through that server, the file is refused under its name, and
    # sent under a new one
    elsewhere = _runner(str(EXAMPLE / "recipients.csv"))(tmp_path / "new", "--smtp", url)
    assert elsewhere.exit_code == 2, elsewhere.output
    renamed = tmp_path / "offers-again.csv"
    shutil.copyfile(EXAMPLE / "recipients.csv", renamed)
    attachments = ("--attachments", str(EXAMPLE / "attachments"))
    assert _runner(str(renamed))(tmp_path / "new", "--smtp", url, *attachments).exit_code == 0
    assert len(inbox.envelopes) == 36


def test_a_workdir_that_mailed_through_two_servers_holds_the_file_to_both(
    smtp_inbox, other_inbox, tmp_path: Path
):
    (inbox, url), (relay, relay_url) = smtp_inbox, other_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN the campaign sent through the server, then run again from the same workdir
    # through a backup relay (nothing left to send)
    assert run(tmp_path / "a", "--smtp", url).exit_code == 0
    assert run(tmp_path / "a", "--smtp", relay_url).exit_code == 0

    # WHEN another workdir, which first rehearsed through the relay, runs it through the
    # first server
    assert run(tmp_path / "b", "--smtp", relay_url).exit_code == 2
    real = run(tmp_path / "b", "--smtp", url)

    # THEN both are refused: the first server is not forgotten behind the relay, and a
    # workdir's later runs are checked as its first
    assert real.exit_code == 2, real.output
    assert (len(inbox.envelopes), len(relay.envelopes)) == (18, 0)


# The record of workdirs damaged (A: the workdir that sent the file), and what is said of it
DAMAGED_RECORDS = {
    "corrupt": ('{"workdirs": {"A', "not readable"),
    "not-a-record": (
        '{"workdirs": {"/x": {"c": [1, 2]}}}',
        'not the record this version writes (its "workdirs" entry of /x, campaign c, is [1, 2],'
        " not a list of mail servers)",
    ),
    "sent-not-an-object": (
        '{"workdirs": {}, "sent": [18]}',
        'not the record this version writes (its "sent" is a list)',
    ),
    "a-workdir-not-an-object": (
        '{"workdirs": {}, "sent": {"A": 18}}',
        'not the record this version writes (its "sent" entry of A is a number)',
    ),
    "a-count-as-text": (
        '{"workdirs": {}, "sent": {"A": {"c": "18"}}}',
        'not the record this version writes (its "sent" entry of A, campaign c, is "18", not a'
        " count)",
    ),
    "a-count-as-a-fraction": (
        '{"workdirs": {}, "sent": {"A": {"c": 10.0}}}',
        'not the record this version writes (its "sent" entry of A, campaign c, is 10.0, not a'
        " count)",
    ),
    "a-relative-workdir": (
        '{"workdirs": {"brk/w": {"c": ["smtp://127.0.0.1:2525"]}}}',
        'not the record this version writes (its "workdirs" entry of brk/w is not a whole path)',
    ),
    "a-relative-workdir-of-a-mark": (
        '{"workdirs": {}, "sent": {"w": {"c": 18}}}',
        'not the record this version writes (its "sent" entry of w is not a whole path)',
    ),
    "a-server-not-a-url": (
        '{"workdirs": {"/x": {"c": ["mail server"]}}}',
        'not the record this version writes (its "workdirs" entry of /x, campaign c, is'
        ' ["mail server"], not a list of mail servers)',
    ),
    "a-server-port-not-a-number": (
        '{"workdirs": {"/x": {"c": ["smtp://127.0.0.1:mail"]}}}',
        'not the record this version writes (its "workdirs" entry of /x, campaign c, is'
        ' ["smtp://127.0.0.1:mail"], not a list of mail servers)',
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGED_RECORDS))
def test_a_record_of_workdirs_that_cannot_be_read_stops_the_run(
    smtp_inbox, tmp_path: Path, state_dir: Path, damage
):
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))
    assert run(tmp_path / "a", "--smtp", url).exit_code == 0

    # GIVEN the record of workdirs damaged, in a part or whole
    record = state_dir / "known-workdirs.json"
    text, what = (part.replace("A", str(tmp_path / "a")) for part in DAMAGED_RECORDS[damage])
    record.write_text(text)

    # WHEN the file runs through the server from another workdir, or from its own
    again = run(tmp_path / "b", "--smtp", url)
    own = run(tmp_path / "a", "--smtp", url)

    # THEN nothing is sent, and it says why (the check would not know the workdirs), and the
    # safe way on: put it back, or move it aside (deleting it would lose its marks)
    said = " ".join(again.output.split())
    assert (again.exit_code, own.exit_code) == (3, 3), said
    assert f"{record}: {what}" in said
    assert ": it records what each workdir delivered through a mail server" in said
    assert "Put it back from a backup if there is one. Otherwise move it aside" in said
    assert "these checks start afresh and know nothing of what it held" in said
    assert "delete" not in said
    assert len(inbox.envelopes) == 18
    # AND the record is left as it was, for a person to read
    assert record.read_text() == text


def test_validate_says_a_damaged_record_of_workdirs_as_run_would_and_writes_none(
    smtp_inbox, tmp_path: Path, state_dir: Path
):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    csv_file = str(EXAMPLE / "recipients.csv")
    run = _runner(csv_file)

    def validate(workdir: Path, *more: str):
        return CliRunner().invoke(cli, ["validate", csv_file, "--workdir", str(workdir), *more])

    # GIVEN the file sent through the server from one workdir, tried into the outbox in
    # another, and the record of workdirs then damaged
    assert run(tmp_path / "server", "--smtp", url).exit_code == 0
    assert run(tmp_path / "outbox").exit_code == 0
    record = state_dir / "known-workdirs.json"
    text = '{"workdirs": {}, "sent": {"/x": {"c": "18"}}}'
    record.write_text(text)

    # WHEN validate checks the file for the workdir that sent it through the server
    server = validate(tmp_path / "server")

    # THEN it says `run` would refuse it (as a run through the server, the file's way there,
    # does), with run's exit status
    said = " ".join(server.output.split())
    assert server.exit_code == 3, said
    assert "`run` would refuse this file (KnownWorkdirsDamaged):" in said
    assert f'{record}: not the record this version writes (its "sent" entry of /x' in said
    assert "All good" not in said

    # WHEN it checks the file for the outbox trial's workdir
    trial = validate(tmp_path / "outbox")
    found = json.loads(validate(tmp_path / "outbox", "--json").stdout)

    # THEN it notes that a run through a mail server would stop, its status that of the
    # file's rows (the demo's 2 rejected), as a run into the outbox does not read the record
    said = " ".join(trial.output.split())
    assert trial.exit_code == 4, said
    assert (
        "Note: a run through a mail server (--smtp) would stop here, sending nothing"
        f" (KnownWorkdirsDamaged; a run into the outbox does not read this): {record}: not the"
        " record this version writes"
    ) in said
    assert found["earlier_runs"]["record_note"]["error"] == "KnownWorkdirsDamaged"
    assert "error" not in found["earlier_runs"]
    # AND validate wrote nothing: the record is as it was
    assert record.read_text() == text
    assert len(inbox.envelopes) == 18


@pytest.mark.parametrize("fault", ["a-file-on-its-path", "takes-no-new-file"])
def test_a_state_folder_that_cannot_be_written_stops_the_run_as_a_workdir_would(
    smtp_inbox, tmp_path: Path, state_dir: Path, monkeypatch, immutable, fault
):
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN a state folder that cannot hold the record of workdirs: a file where a folder on
    # its path should be, or a folder that takes no new file (immutable: root is refused too)
    if fault == "a-file-on-its-path":
        blocked = tmp_path / "a-file"
        blocked.write_text("")
        state_dir = blocked / "state"
        monkeypatch.setenv("MAILMATRIX_STATE_DIR", str(state_dir))
    else:
        state_dir.mkdir()
        immutable(state_dir)

    # WHEN the file runs through the server
    refused = run(tmp_path / "w", "--smtp", url)

    # THEN nothing is sent, with the exit status of a workdir that cannot be written (1, not
    # 3: no setting of the file is wrong), naming the record and the variable to set
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1, said
    assert f"{state_dir / 'known-workdirs.json'}: the record of known workdirs cannot" in said
    assert "set MAILMATRIX_STATE_DIR to a folder outside every workdir" in said
    assert "nothing was sent" in said
    assert inbox.envelopes == []
    assert not (tmp_path / "w" / "executions").exists()


@pytest.mark.parametrize(
    ("place", "said_why"),
    [
        ("in-the-workdir", "is inside the workdir {workdir}."),
        ("the-workdir", "is the workdir {workdir}."),
        ("in-the-default-workdir", "is inside the workdir {default} (the default one)."),
        ("xdg-state-is-xdg-data", "is the workdir {default} (the default one)."),
        ("relative", "MAILMATRIX_STATE_DIR=state: not an absolute path."),
    ],
    ids=["in-the-workdir", "the-workdir", "in-the-default", "xdg-state-is-xdg-data", "relative"],
)
def test_a_state_folder_a_workdir_would_take_back_from_a_backup_stops_the_run(
    smtp_inbox, tmp_path: Path, monkeypatch, place, said_why
):
    import os

    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))
    workdir, default = tmp_path / "w", Path(os.environ["MAILMATRIX_WORKDIR"])

    # GIVEN a state folder in the run's workdir, or that is it; in the default workdir, or
    # that is it (XDG_STATE_HOME and XDG_DATA_HOME alike); or a relative MAILMATRIX_STATE_DIR
    state = {
        "in-the-workdir": workdir / "state",
        "the-workdir": workdir,
        "in-the-default-workdir": default / "state",
        "relative": Path("state"),
    }.get(place)
    if state is None:
        default = tmp_path / "xdg" / "mailmatrix"
        for variable in ("MAILMATRIX_STATE_DIR", "MAILMATRIX_WORKDIR"):
            monkeypatch.delenv(variable)
        for variable in ("XDG_STATE_HOME", "XDG_DATA_HOME"):
            monkeypatch.setenv(variable, str(tmp_path / "xdg"))
    else:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MAILMATRIX_STATE_DIR", str(state))

    # WHEN the file runs through the server
    refused = run(workdir, "--smtp", url)

    # THEN nothing is sent, with the exit status of a state folder that cannot be written,
    # saying why and where to keep the record instead
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1, said
    assert said_why.format(workdir=workdir, default=default) in said
    assert "Nothing was sent. Set MAILMATRIX_STATE_DIR to a" in said
    assert "outside every workdir" in said
    assert inbox.envelopes == []
    assert not (workdir / "executions").exists()
    # AND a run into the outbox, which keeps no record there, goes on
    assert run(workdir).exit_code == 0


def test_a_workdir_inside_the_state_folder_runs_through_the_server(
    smtp_inbox, tmp_path: Path, state_dir: Path
):
    # (a backup of the workdir does not hold the record: put back, it is caught)
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    assert run(state_dir / "w", "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18


def test_a_state_folder_that_breaks_as_the_run_sends_is_said_and_the_run_fails(
    tmp_path: Path, state_dir: Path, monkeypatch, immutable
):
    import json
    import os

    run = _runner(str(EXAMPLE / "recipients.csv"))
    workdir = tmp_path / "w"
    real_open = os.open

    class Breaking(Inbox):
        """A server whose first letter makes the state folder take no new file."""

        async def handle_DATA(self, server, session, envelope):
            if not self.envelopes:
                immutable(state_dir)
            return await super().handle_DATA(server, session, envelope)

    # GIVEN a state folder that takes no new file from the run's first letter on
    inbox = Breaking()
    with serving(inbox) as url:
        # WHEN the file runs through the server
        done = run(workdir, "--smtp", url)

        # THEN the letters are sent and the summary says so, but the run fails, saying last
        # that the record of workdirs could not take them, and what that means
        said = " ".join(done.output.split())
        assert done.exit_code == 1, said
        assert len(inbox.envelopes) == 18
        assert "Sent by this run │ 18" in said
        record = state_dir / "known-workdirs.json"
        assert said.endswith(
            "Warning: the record of known workdirs is not up to date"
            f" {record}: the record of known workdirs could not be brought up to date as this"
            " run ended: not permitted: the file or its folder may be immutable, as `lsattr`"
            " shows (Operation not permitted). The letters were sent, as the summary says, and the"
            " workdir keeps its own record of them; but the record outside it does not know how"
            " many of this file's letters the workdir's ledger now holds as sent: if the"
            " workdir is put back from a backup taken before this run, a run there is not"
            " refused, and mails again the people mailed since the backup. Make that folder"
            " writable (chmod u+w; chattr -i, as root, for an immutable one), then run the"
            " file again as this run did: it sends nothing again (its rows are skipped) and"
            " brings the record up to date"
        ), said
        # AND the workdir's own record of them is kept all the same
        own = json.loads((workdir / "deliveries.json").read_text())
        assert [way["sent_in_ledger"] for way in own.values()] == [18]
        assert json.loads(record.read_text())["sent"] == {}

        # WHEN the folder is writable again, and the file runs again as it did
        monkeypatch.setattr(os, "open", real_open)
        again = run(workdir, "--smtp", url)

    # THEN nobody is mailed again, and the record takes the letters
    assert again.exit_code == 0, again.output
    assert len(inbox.envelopes) == 18
    marks = json.loads(record.read_text())["sent"][str(workdir.resolve())]
    assert list(marks.values()) == [18]


def test_a_rehearsal_through_another_server_does_not_hold_back_the_real_send(
    smtp_inbox, other_inbox, tmp_path: Path
):
    (inbox, url), (catcher, catcher_url) = smtp_inbox, other_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN a rehearsal of the campaign through a mail catcher, from its own workdir
    assert run(tmp_path / "rehearsal", "--smtp", catcher_url).exit_code == 0

    # WHEN the real send goes through the real server from another workdir
    real = run(tmp_path / "real", "--smtp", url)

    # THEN it goes out: the letters so far went to the catcher, not to the people
    assert real.exit_code == 0, real.output
    assert (len(catcher.envelopes), len(inbox.envelopes)) == (18, 18)


def test_a_redrive_is_held_to_what_other_workdirs_delivered_too(
    smtp_inbox, tmp_path: Path, monkeypatch
):
    import json

    from click.testing import CliRunner

    from functions.validate import app as validate_app
    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN a run from workdir B stopped while it validated (nothing claimed: B keeps no
    # record of the file, but its execution can be redriven)
    validate_job = validate_app.validate_job

    def stopped(*args, **kwargs):
        monkeypatch.setattr(validate_app, "validate_job", validate_job)
        raise KeyboardInterrupt

    monkeypatch.setattr(validate_app, "validate_job", stopped)
    first = run(tmp_path / "b", "--smtp", url, "--json")
    execution = json.loads(first.stdout)["execution"]
    assert json.loads(first.stdout)["status"] == "ABORTED"

    # AND the file then sent from workdir A
    assert run(tmp_path / "a", "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18

    # WHEN B's execution is redriven
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(tmp_path / "b")])

    # THEN it is refused as a run from B would be: nobody gets a second letter
    said = " ".join(redriven.output.split())
    assert redriven.exit_code != 0, said
    assert f"runs in another workdir, {tmp_path / 'a'}, delivered a file named" in said
    assert len(inbox.envelopes) == 18


def _run_in_a_process(workdir: Path, url: str, *, before: str = "", limit: int | None = None):
    """`mailmatrix run` of the demo file from ``workdir`` through the server at ``url``, in a
    process of its own: ``before`` (Python) runs in it first; ``limit``: its file size limit."""
    import subprocess
    import sys

    from tests.e2e.test_workdir_faults import _at_the_file_size_limit

    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--smtp", url]
    return subprocess.run(
        [sys.executable, "-c", f"{before}\nfrom mailmatrix.cli.main import main; main()", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=(lambda: _at_the_file_size_limit(limit)) if limit else None,
        check=False,
    )


def test_a_run_refused_as_its_ledger_is_made_does_not_hold_the_file_to_its_workdir(
    smtp_inbox, tmp_path: Path, state_dir: Path
):
    import json

    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN a run through the server from workdir A refused as its ledger was made: its process
    # may write files of 30 KiB at most, and the ledger cannot be
    refused = _run_in_a_process(tmp_path / "a", url, limit=30 * 1024)
    assert refused.returncode == 1, refused.stderr
    assert "cannot write the ledger: it reached the file size limit" in refused.stderr
    assert inbox.envelopes == []

    # THEN the record of known workdirs does not say A delivers the file (it said so)
    record = json.loads((state_dir / "known-workdirs.json").read_text(encoding="utf-8"))
    assert record["workdirs"] == {}

    # WHEN the file runs through the same server from workdir B
    sent = run(tmp_path / "b", "--smtp", url)

    # THEN it is sent, not refused for letters "delivered" from A that never went
    assert sent.exit_code == 0, sent.output
    assert len(inbox.envelopes) == 18

    # AND A, run again, is now refused in true words: B delivered them
    again = run(tmp_path / "a", "--smtp", url)
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert f"runs in another workdir, {tmp_path / 'b'}, delivered a file named" in said
    assert "(18 letter(s) of it are recorded sent there)" in said
    assert len(inbox.envelopes) == 18


def test_a_run_killed_after_sending_still_holds_the_file_to_its_workdir(smtp_inbox, tmp_path: Path):
    inbox, url = smtp_inbox

    # GIVEN a run through the server from workdir A whose process is killed once its letters
    # went out, before the run could end (no cleanup at all, as SIGKILL leaves it)
    killed_after_sending = (
        "import os\n"
        "import mailmatrix.local as local\n"
        "execute = local.execute\n"
        "def sent_then_killed(*args, **kwargs):\n"
        "    execute(*args, **kwargs)\n"
        "    os._exit(137)\n"
        "local.execute = sent_then_killed"
    )
    killed = _run_in_a_process(tmp_path / "a", url, before=killed_after_sending)
    assert killed.returncode == 137, killed.stderr
    assert len(inbox.envelopes) == 18

    # WHEN the file runs through the same server from workdir B
    again = _runner(str(EXAMPLE / "recipients.csv"))(tmp_path / "b", "--smtp", url)

    # THEN it is refused: A's letters may be out, and B's ledger knows none of them
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert f"runs in another workdir, {tmp_path / 'a'}, delivered a file named" in said
    assert len(inbox.envelopes) == 18


def test_a_workdir_moved_after_sending_still_holds_the_file(smtp_inbox, tmp_path: Path):
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN the file sent from a workdir that was then moved away
    assert run(tmp_path / "a", "--smtp", url).exit_code == 0
    (tmp_path / "a").rename(tmp_path / "a-archived")

    # WHEN it runs through the same server from another workdir
    again = run(tmp_path / "b", "--smtp", url)

    # THEN it is refused: the record of what that workdir delivered outlives the folder
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert "(that folder no longer holds their record: moved, renamed or deleted?)" in said
    assert "If that workdir was moved, run the file in its new place." in said

    # AND a new folder where the old one was is refused too (its ledger knows nothing)
    anew = run(tmp_path / "a", "--smtp", url)
    assert anew.exit_code == 2, anew.output
    assert "holds no trace of them" in " ".join(anew.output.split())

    # AND the moved workdir goes on in its new place: nobody is mailed again
    moved = run(tmp_path / "a-archived", "--smtp", url)
    assert moved.exit_code == 0, moved.output
    assert len(inbox.envelopes) == 18


def _sent_around_a_backup(run: Any, csv_path: Path, inbox: Inbox, workdir: Path) -> int:
    """Send the example's first ten rows with ``run`` (a run of ``csv_path`` in ``workdir``
    through the server of ``inbox``), back the workdir up then (to ``backup`` beside the
    file's folder), and send the rest of the file: the letters sent before the backup."""
    header, *rows = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    csv_path.parent.mkdir(exist_ok=True)
    csv_path.write_text("\n".join([header, *rows[:10]]) + "\n", encoding="utf-8")
    assert run().exit_code == 0
    first = len(inbox.envelopes)
    shutil.copytree(workdir, csv_path.parent.parent / "backup", symlinks=True)
    csv_path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    assert run().exit_code == 0
    assert len(inbox.envelopes) > first
    return first


def _put_back(workdir: Path) -> None:
    """Put ``workdir`` back whole (ledger and its own record alike) from the backup that
    _sent_around_a_backup took."""
    shutil.rmtree(workdir)
    shutil.copytree(workdir.parent / "backup", workdir, symlinks=True)


@pytest.mark.parametrize("place", ["same", "new"], ids=["in-its-place", "in-a-new-place"])
def test_a_workdir_put_back_from_an_older_backup_mails_nobody_again(
    smtp_inbox, tmp_path: Path, place: str
):
    import shutil

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    csv_path = tmp_path / "offers" / "offers.csv"
    run = _runner(str(csv_path))
    attachments = ["--attachments", str(EXAMPLE / "attachments")]
    workdir = tmp_path / "work"

    # GIVEN the first ten rows sent through a server, the workdir backed up then, and the rest
    # of the file sent after the backup
    first = _sent_around_a_backup(
        lambda: run(workdir, "--smtp", url, *attachments), csv_path, inbox, workdir
    )

    # WHEN the workdir is put back whole from that backup (ledger and its own record alike),
    # where it was or in a new folder (as a workdir moved there), and the file runs again
    shutil.rmtree(workdir)
    if place == "new":
        workdir = tmp_path / "restored"
    shutil.copytree(tmp_path / "backup", workdir, symlinks=True)
    again = run(workdir, "--smtp", url, *attachments)

    # THEN it is refused by the record kept outside the workdir: nobody is mailed again
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert f"hold {len(inbox.envelopes)} of this file's letters as sent" in said
    assert f"but it holds {first}: the workdir was put back from a backup" in said
    assert ("(in its earlier place," in said) is (place == "new")
    assert len(inbox.envelopes) == 18
    # AND validate says so too, as run would, where the workdir is in its place (not in a
    # new one: it takes no --smtp, so cannot tell which earlier folder this one replaces)
    checked = CliRunner().invoke(
        cli, ["validate", str(csv_path), "--workdir", str(workdir), *attachments]
    )
    assert (checked.exit_code == 2) is (place == "same"), checked.output


def test_the_default_workdir_put_back_from_an_older_backup_mails_nobody_again(
    smtp_inbox, tmp_path: Path, monkeypatch
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    default = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))
    csv_path = tmp_path / "offers" / "offers.csv"
    attachments = ["--attachments", str(EXAMPLE / "attachments")]
    command = ["run", str(csv_path), "--smtp", url, *attachments]  # no --workdir

    # GIVEN the first ten rows sent through a server from the default workdir, the default
    # workdir backed up then, and the rest of the file sent after the backup
    first = _sent_around_a_backup(
        lambda: CliRunner().invoke(cli, command), csv_path, inbox, default
    )

    # WHEN the default workdir is put back whole from that backup, and the file runs again
    _put_back(default)
    again = CliRunner().invoke(cli, command)

    # THEN it is refused: the record of workdirs did not go back with it
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert f"hold {len(inbox.envelopes)} of this file's letters as sent" in said
    assert f"but it holds {first}: the workdir was put back from a backup" in said
    assert len(inbox.envelopes) == 18


def test_runs_with_another_default_workdir_see_the_same_record(
    smtp_inbox, tmp_path: Path, monkeypatch, state_dir: Path
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    command = ["run", str(EXAMPLE / "recipients.csv"), "--smtp", url]  # no --workdir

    # GIVEN the file sent through a server from the default workdir MAILMATRIX_WORKDIR names
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "one"))
    assert CliRunner().invoke(cli, command).exit_code == 0
    assert len(inbox.envelopes) == 18

    # WHEN it runs through the same server with MAILMATRIX_WORKDIR naming another folder
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "two"))
    again = CliRunner().invoke(cli, command)

    # THEN it is refused as a run from any other workdir is: one record for both
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert f"runs in another workdir, {tmp_path / 'one'}, delivered a file named" in said
    assert len(inbox.envelopes) == 18
    # AND the record is open to its owner only: it names workdirs and servers
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert (state_dir / "known-workdirs.json").stat().st_mode & 0o777 == 0o600


def test_the_record_an_earlier_build_kept_in_the_default_workdir_keeps_its_marks(
    smtp_inbox, tmp_path: Path, monkeypatch, state_dir: Path
):
    import json

    inbox, url = smtp_inbox
    default = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))
    csv_path = tmp_path / "offers" / "offers.csv"
    run = _runner(str(csv_path))
    attachments = ["--attachments", str(EXAMPLE / "attachments")]
    workdir = tmp_path / "work"

    # GIVEN a file sent in two parts through a server from a workdir backed up between them,
    # its record of workdirs kept in the default workdir, as an earlier build kept it
    _sent_around_a_backup(
        lambda: run(workdir, "--smtp", url, *attachments), csv_path, inbox, workdir
    )
    default.mkdir(exist_ok=True)
    earlier = default / "known-workdirs.json"
    (state_dir / "known-workdirs.json").rename(earlier)

    # WHEN the workdir is put back from that backup, and the file runs again
    _put_back(workdir)
    again = run(workdir, "--smtp", url, *attachments)

    # THEN the earlier record's marks refuse it: nobody is mailed again
    said = " ".join(again.output.split())
    assert again.exit_code == 2, said
    assert f"({state_dir / 'known-workdirs.json'}) saw the ledger of this workdir" in said
    assert "hold 18 of this file's letters as sent" in said
    assert len(inbox.envelopes) == 18
    # AND the earlier record, merged, is renamed so (and left to read), its marks kept
    assert not earlier.exists()
    merged = json.loads((default / "known-workdirs.json.merged").read_text())
    kept = json.loads((state_dir / "known-workdirs.json").read_text())
    assert kept["sent"] == merged["sent"]
    assert list(kept["sent"][str(workdir.resolve())].values()) == [18]


def test_a_workdir_whose_damaged_record_was_moved_aside_goes_on_through_its_server(
    smtp_inbox, tmp_path: Path
):
    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))

    # GIVEN the file sent through the server from a workdir whose record of its runs was then
    # moved aside, as the message about a damaged one says to do without a backup
    assert run(tmp_path / "a", "--smtp", url).exit_code == 0
    (tmp_path / "a" / "deliveries.json").rename(tmp_path / "a" / "deliveries.json.damaged")

    # WHEN it runs there again through that server
    again = run(tmp_path / "a", "--smtp", url)

    # THEN it goes on (its ledger is the trace of those letters), and nobody is mailed again
    assert again.exit_code == 0, again.output
    assert len(inbox.envelopes) == 18
    # AND a new folder elsewhere is still refused: its ledger knows nothing of them
    assert run(tmp_path / "b", "--smtp", url).exit_code == 2
    assert len(inbox.envelopes) == 18


def test_the_list_of_workdirs_an_earlier_build_kept_still_holds_the_file(
    smtp_inbox, tmp_path: Path, monkeypatch, state_dir: Path
):
    import json

    inbox, url = smtp_inbox
    run = _runner(str(EXAMPLE / "recipients.csv"))
    default = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))

    # GIVEN the file sent from workdir A, and the known workdirs kept as a plain list in the
    # default workdir, as an earlier build kept them
    assert run(tmp_path / "a", "--smtp", url).exit_code == 0
    (state_dir / "known-workdirs.json").unlink()
    default.mkdir()
    (default / "known-workdirs.json").write_text(json.dumps([str(tmp_path / "a")]))

    # WHEN it runs through the same server from workdir B
    again = run(tmp_path / "b", "--smtp", url)

    # THEN the list is read as the record (A's own record says what it delivered): refused
    assert again.exit_code == 2, again.output
    assert len(inbox.envelopes) == 18


def test_runs_from_the_default_workdir_record_each_server_once(
    smtp_inbox, tmp_path, monkeypatch, state_dir
):
    import json

    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    default = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))
    run = ["run", str(EXAMPLE / "recipients.csv"), "--smtp", url]

    # GIVEN three runs of the file from the default workdir, named and not
    for more in ([], ["--workdir", str(default)], []):
        assert CliRunner().invoke(cli, [*run, *more]).exit_code == 0

    # THEN its record holds the server once
    record = json.loads((state_dir / "known-workdirs.json").read_text())["workdirs"]
    assert list(record) == [str(default.resolve())]
    assert [len(servers) for servers in record[str(default.resolve())].values()] == [1]
    assert len(inbox.envelopes) == 18


def _sent_then_record_lost(
    workdir: Path, *options: str, aside: bool = False, earlier_ledger: bool = False
):
    """The demo file run in ``workdir`` with ``options``, whose record of runs
    (deliveries.json) is then deleted, or moved ``aside`` (as said for a damaged one), and
    whose ledger, for an ``earlier_ledger``, keeps no way of sending (no deliveries table),
    as an earlier version wrote it; the runner of the file."""
    run = _runner(str(EXAMPLE / "recipients.csv"))
    assert run(workdir, *options).exit_code == 0
    record = workdir / "deliveries.json"
    if aside:
        record.rename(workdir / "deliveries.json.damaged")
    else:
        record.unlink()
    if earlier_ledger:
        with contextlib.closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db, db:
            db.execute("DROP TABLE deliveries")
    return run


# How a refused run says the workdir's ledger tells the way of the file's letters: as this
# version writes it, and as an earlier one did (without the way: by the ids of those sent).
LEDGER_TELLS = {
    "ledger-keeps-the-way": "its ledger (ledger.sqlite3) keeps how their letters went.",
    "ledger-of-an-earlier-version": (
        "its ledger (ledger.sqlite3), though from a version that did not keep how their letters"
        " went, shows it by the ids it holds of the letters sent (file names in the outbox,"
        " Message-IDs through a mail server)."
    ),
}


@pytest.mark.parametrize("ledger", list(LEDGER_TELLS))
@pytest.mark.parametrize("aside", [True, False], ids=["moved-aside", "deleted"])
def test_a_trial_whose_record_was_lost_does_not_let_the_server_skip_everyone(
    smtp_inbox, tmp_path: Path, state_dir: Path, aside: bool, ledger: str
):
    import json

    inbox, url = smtp_inbox
    workdir = tmp_path / "work"
    # GIVEN a trial into the outbox, whose workdir then lost its record of runs
    earlier_ledger = ledger == "ledger-of-an-earlier-version"
    run = _sent_then_record_lost(workdir, aside=aside, earlier_ledger=earlier_ledger)

    # WHEN it runs through the server
    real = run(workdir, "--smtp", url)

    # THEN it is refused as a change of way, nothing sent: its ledger says the trial's letters
    # went to the outbox (a run through the server would skip them all, mailing no one)
    said = " ".join(real.output.split())
    assert real.exit_code == 2, said
    assert (
        f"recipients.csv: the earlier runs of a file named recipients.csv in {workdir}"
        f" delivered through the local outbox (no --smtp), but this run gave --smtp {url}."
        " Nothing was sent."
    ) in said
    assert "run the file in another --workdir" in said
    assert f"(deliveries.json: moved aside, or lost?), but {LEDGER_TELLS[ledger]}" in said
    assert inbox.envelopes == []
    # AND the record of workdirs does not claim they were mailed through the server
    record = json.loads((state_dir / "known-workdirs.json").read_text())
    assert str(workdir.resolve()) not in {**record["workdirs"], **record["sent"]}
    # AND from a new workdir, it goes to everyone
    assert run(tmp_path / "real", "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18


@pytest.mark.parametrize("ledger", list(LEDGER_TELLS))
def test_a_file_sent_through_a_server_whose_record_was_lost_is_not_rerun_into_the_outbox(
    smtp_inbox, tmp_path: Path, ledger: str
):
    inbox, url = smtp_inbox
    workdir = tmp_path / "work"
    # GIVEN the file sent through the server from a workdir whose record of runs was lost
    earlier_ledger = ledger == "ledger-of-an-earlier-version"
    run = _sent_then_record_lost(workdir, "--smtp", url, earlier_ledger=earlier_ledger)

    # WHEN it runs again without --smtp
    forgot = run(workdir)

    # THEN it is refused, nothing going to the outbox (it would mark the rows left sent
    # without mailing them), and told the server to add (a ledger of an earlier version
    # knows their ids are Message-IDs, not which server took them)
    said = " ".join(forgot.output.split())
    assert forgot.exit_code == 2, said
    server, fix = f"--smtp {url}", f"--smtp {url}"
    if earlier_ledger:
        server = "a mail server (--smtp; which one, this workdir no longer says)"
        fix = "the --smtp URL they used"
    assert (
        f"delivered through {server}, but this run gave no --smtp (the local outbox)."
        f" Nothing was sent. To go on with that campaign (a rerun, or its file corrected), run"
        f" it again with {fix}: rows already sent are skipped. This workdir has no record of"
        f" those runs (deliveries.json: moved aside, or lost?), but {LEDGER_TELLS[ledger]}"
    ) in said
    assert not list((workdir / "outbox").rglob("*.*"))
    # AND with it, the run goes on, mailing no one again
    assert run(workdir, "--smtp", url).exit_code == 0
    assert len(inbox.envelopes) == 18


def _trial_file(tmp_path: Path, rows: int) -> Path:
    """The demo's first ``rows`` rows as small.csv, with the demo's letters beside it."""
    folder = tmp_path / "campaign"
    shutil.copytree(EXAMPLE / "attachments", folder / "attachments")
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    path = folder / "small.csv"
    path.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("route", ["another-workdir", "new-name-send-again"])
def test_the_advice_after_an_outbox_trial_sends_every_letter_once_through_the_server(
    smtp_inbox, tmp_path: Path, route: str
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    trial = _trial_file(tmp_path, 3)
    workdir = str(tmp_path / "work")

    def run(csv_file: Path, *more: str):
        return CliRunner().invoke(cli, ["run", str(csv_file), "--workdir", workdir, *more])

    # GIVEN an outbox trial of small.csv
    assert run(trial).exit_code == 0
    assert len(list((tmp_path / "work" / "outbox" / "new").iterdir())) == 3

    # WHEN the real send through the server is run in the same workdir
    refused = run(trial, "--smtp", url)

    # THEN it is refused, naming the two ways that work, and no longer claiming that a new
    # name mails everyone
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, said
    assert "either run the file in another --workdir" in said
    assert "run a copy under a new file name with --smtp and --send-again-from small.csv" in said
    assert "everyone in it is mailed" not in said and "mails everyone" not in said
    assert not inbox.envelopes

    # WHEN the advice is followed as it reads
    if route == "another-workdir":
        workdir = str(tmp_path / "real")
        sent = run(trial, "--smtp", url)
    else:
        real = trial.with_name("small-real.csv")
        shutil.copy(trial, real)
        again = said.split("--send-again-from ")[1].split(" ")[0]
        sent = run(real, "--smtp", url, "--send-again-from", again)

    # THEN every letter reaches the server once, and a rerun sends none again
    assert sent.exit_code == 0, sent.output
    received = collections.Counter(rcpts[0] for _, rcpts, _ in inbox.envelopes)
    assert sorted(received.values()) == [1, 1, 1]
    assert set(received) == set(list(demo_rows())[:3])
    rerun = run(*([trial] if route == "another-workdir" else [real]), "--smtp", url)
    assert rerun.exit_code == 0, rerun.output
    assert len(inbox.envelopes) == 3


def test_a_copy_run_after_an_outbox_trial_says_its_letters_went_only_to_the_outbox(
    smtp_inbox, tmp_path: Path
):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    inbox, url = smtp_inbox
    trial = _trial_file(tmp_path, 2)
    workdir = str(tmp_path / "work")
    assert CliRunner().invoke(cli, ["run", str(trial), "--workdir", workdir]).exit_code == 0

    # GIVEN an outbox trial of small.csv WHEN a copy of it runs through the server there
    real = trial.with_name("small-real.csv")
    shutil.copy(trial, real)
    held = CliRunner().invoke(cli, ["run", str(real), "--workdir", workdir, "--smtp", url])

    # THEN each row is held back, its reason saying the letter went to the local outbox (not
    # that the address received it) and how to send it for real
    said = " ".join(held.output.split())
    assert held.exit_code == 0, said
    assert not inbox.envelopes
    assert "this address already received" not in said
    for row, pdf in ((2, "amelia-hart.pdf"), (3, "jose-garcia.pdf")):
        assert (
            f"row {row} already sent: this letter ({pdf}, the same contents) went to the local"
            " outbox under small.csv (campaign "
        ) in said
        assert (
            f"(row {row} of that run; a trial?), not to this address, but the ledger counts it"
            " sent, so it is not sent here. To send it for real, run this file with"
            " --send-again-from small.csv"
        ) in said
