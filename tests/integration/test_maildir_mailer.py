"""The Maildir outbox: atomic delivery into new/, envelope recorded, safe from many threads."""

from __future__ import annotations

import email
import email.policy
import errno
import mailbox
import os
import shutil
import threading

import pytest

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.mailer_maildir import ENVELOPE_TO_HEADER, MaildirMailer
from mailmatrix.core.message import build_message, message_bytes
from mailmatrix.core.send import RetryPolicy
from mailmatrix.core.templates import Rendered
from mailmatrix.errors import (
    AccountSendingHalted,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from tests.fixtures.sending import kit
from tests.unit.test_send import run

SENDER = "Acme Talent <talent@example.com>"


def raw_message(to: str = "amy@example.com", **kwargs) -> bytes:
    rendered = Rendered(subject="Your offer", html="<p>Hi</p>", text="Hi\n")
    msg = build_message(sender=SENDER, to_name="Amy", to_email=to, rendered=rendered, **kwargs)
    return message_bytes(msg)


def test_message_lands_in_new_with_envelope_headers_and_exact_bytes(tmp_path):
    # GIVEN an outbox WHEN a message with a Bcc recipient is sent
    outbox = MaildirMailer(tmp_path / "outbox")
    raw = raw_message(bcc=["audit@example.com"])
    name = outbox.send(raw, sender=SENDER, destinations=["amy@example.com", "audit@example.com"])

    # THEN it is one file in new/, nothing left in tmp/
    assert [p.name for p in (tmp_path / "outbox" / "new").iterdir()] == [name]
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []
    stored = (tmp_path / "outbox" / "new" / name).read_bytes()
    # AND the envelope is recorded in front of the unchanged message
    assert stored == (
        b"Return-Path: <talent@example.com>\r\n"
        b"X-MailMatrix-Envelope-To: amy@example.com, audit@example.com\r\n" + raw
    )
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert parsed[ENVELOPE_TO_HEADER] == "amy@example.com, audit@example.com"
    assert parsed["Bcc"] is None
    # AND a Maildir reader sees it
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    assert [m["Subject"] for m in box] == ["Your offer"]


def test_many_threads_write_without_collisions(tmp_path):
    outbox = MaildirMailer(tmp_path / "outbox")
    threads, per_thread = 8, 25
    names: list[str] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            to = f"t{index}-{n}@example.com"
            try:
                name = outbox.send(raw_message(to), sender=SENDER, destinations=[to])
            except Exception as exc:  # collected, asserted below
                errors.append(exc)
                continue
            with lock:
                names.append(name)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert errors == []
    assert len(set(names)) == threads * per_thread
    files = sorted(p.name for p in (tmp_path / "outbox" / "new").iterdir())
    assert files == sorted(names)
    recipients = set()
    for path in (tmp_path / "outbox" / "new").iterdir():
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert parsed[ENVELOPE_TO_HEADER] == parsed["To"].addresses[0].addr_spec
        recipients.add(parsed[ENVELOPE_TO_HEADER])
    assert len(recipients) == threads * per_thread


def test_many_recipients_fold_the_envelope_header(tmp_path):
    outbox = MaildirMailer(tmp_path)
    everyone = [f"person-number-{i}@example.com" for i in range(10)]
    name = outbox.send(raw_message(), sender=SENDER, destinations=everyone)
    head = (tmp_path / "new" / name).read_bytes().split(b"\r\nFrom:", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    parsed = email.message_from_bytes((tmp_path / "new" / name).read_bytes())
    assert [a.strip() for a in parsed[ENVELOPE_TO_HEADER].split(",")] == everyone


def test_idn_recipient_is_recorded_in_ascii(tmp_path):
    outbox = MaildirMailer(tmp_path)
    name = outbox.send(raw_message(), sender=SENDER, destinations=["anna@bücher.example"])
    assert b"X-MailMatrix-Envelope-To: anna@xn--bcher-kva.example\r\n" in (
        (tmp_path / "new" / name).read_bytes()
    )


def test_no_recipients_is_permanent(tmp_path):
    with pytest.raises(PermanentSendError, match="no envelope recipients"):
        MaildirMailer(tmp_path).send(raw_message(), sender=SENDER, destinations=[])


def test_outbox_that_cannot_be_created_halts_naming_the_folder_and_why(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AccountSendingHalted) as halted:
        MaildirMailer(blocker / "outbox")
    assert halted.value.message == (
        f"maildir {blocker / 'outbox'}: cannot make the outbox's folder"
        f" {blocker / 'outbox' / 'tmp'}: a file stands where a folder on its path should be"
        " (Not a directory)"
    )


def test_a_file_in_the_place_of_an_outbox_folder_is_said_so(tmp_path):
    (tmp_path / "new").write_text("in the way")
    with pytest.raises(AccountSendingHalted) as halted:
        MaildirMailer(tmp_path)
    assert halted.value.message == (
        f"maildir {tmp_path}: cannot make the outbox's folder {tmp_path / 'new'}: a file is in"
        " its place (File exists)"
    )


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "renamed"])
def test_a_file_put_in_the_place_of_new_halts_and_leaves_nothing_behind(
    tmp_path, monkeypatch, unnamed
):
    # GIVEN an outbox whose new/ was replaced by a file after it was made
    outbox = MaildirMailer(tmp_path)
    if not unnamed:
        no_unnamed_files(monkeypatch)
    shutil.rmtree(tmp_path / "new")
    (tmp_path / "new").write_text("in the way")

    # WHEN a message is sent THEN the campaign halts (no retry moves the file), saying so
    with pytest.raises(AccountSendingHalted, match=r"^maildir .*: cannot write ") as failed:
        outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"])
    assert "a file stands where a folder on its path should be (Not a directory)" in (
        failed.value.message
    )
    assert list((tmp_path / "tmp").iterdir()) == []


def test_write_failure_is_transient_and_leaves_nothing_behind(tmp_path, monkeypatch):
    outbox = MaildirMailer(tmp_path)
    fail_writes(monkeypatch, errno.EIO)  # a bad disk: a later try may get through
    with pytest.raises(TransientSendError, match=r"^maildir .*: cannot write ") as failed:
        outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"])
    assert failed.value.refused  # nothing reached new/: not a message that may have gone out
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "new").iterdir()) == []


def fail_writes(monkeypatch, code: int) -> None:
    """Make every write of a message fail with ``code``, as a full size limit or a bad disk."""

    def writev(fd, chunks):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "writev", writev)


def no_unnamed_files(monkeypatch, tries: list[str] | None = None) -> None:
    """Refuse O_TMPFILE (as some network and FUSE file systems do), noting each try in
    ``tries``: messages are then written under a name and renamed."""
    real_open = os.open
    unnamed = getattr(os, "O_TMPFILE", 0)

    def open_without_tmpfile(path, flags, *args, **kwargs):
        if unnamed and flags & unnamed == unnamed:
            if tries is not None:
                tries.append(path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_without_tmpfile)


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "renamed"])
@pytest.mark.parametrize(
    ("code", "error"),
    [(errno.EFBIG, PermanentSendError), (errno.EIO, TransientSendError)],
    ids=["EFBIG", "EIO"],
)
def test_a_failed_write_is_refused_for_sure_and_leaves_nothing(
    tmp_path, monkeypatch, code, error, unnamed
):
    # GIVEN an outbox whose writes fail (a file size limit, an I/O error), by either path
    if not unnamed:
        no_unnamed_files(monkeypatch)
    outbox = MaildirMailer(tmp_path)
    fail_writes(monkeypatch, code)

    # WHEN a message is sent
    with pytest.raises(SendError) as failed:
        outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"])

    # THEN the error says the message was not delivered, and neither new/ nor tmp/ holds it;
    # a message over the size a file may have never fits (this row fails for good), another
    # fault passes
    assert type(failed.value) is error
    assert failed.value.refused or error is PermanentSendError
    assert "cannot write " in failed.value.message
    assert os.strerror(code) in failed.value.message
    assert list((tmp_path / "new").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "the disk holding it is full"),
        (errno.EDQUOT, "the disk quota of this user is used up"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "no permission to write there"),
    ],
)
def test_a_write_failing_for_the_whole_outbox_still_halts(tmp_path, monkeypatch, code, words):
    outbox = MaildirMailer(tmp_path)
    fail_writes(monkeypatch, code)
    with pytest.raises(AccountSendingHalted, match=r"^maildir .*: cannot write ") as halted:
        outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"])
    assert halted.value.message.endswith(f": {words} ({os.strerror(code)})")


def test_rows_whose_writes_fail_are_retried_and_deferred_not_outcome_unknown(tmp_path, monkeypatch):
    # GIVEN a batch of two rows into an outbox whose every write fails (an I/O error)
    clock = kit.FakeClock()
    ledger = SqliteLedger(str(tmp_path / "ledger.db"), clock=clock)
    outbox = MaildirMailer(tmp_path / "outbox")
    fail_writes(monkeypatch, errno.EIO)
    policy = RetryPolicy(tries=4)
    batch = [kit.item("c-1", row, f"p{row}@example.com", f"Person {row}", None) for row in (2, 3)]

    def send(attempt: str):
        campaign = kit.campaign("c-1")
        return run(batch, outbox, ledger, clock, attempt=attempt, campaign=campaign, policy=policy)

    # WHEN the batch is sent
    with pytest.raises(AccountSendingHalted) as stopped:
        send("child-1")

    # THEN each row had its every try, then the campaign halted (the outbox took neither row:
    # the next rows would fare no better); both are left for a later retry, not failed as
    # OutcomeUnknown (the message never reached new/), and nothing marks one a possible duplicate
    assert stopped.value.details["code"] == "ServiceRefusing"
    assert "Input/output error" in stopped.value.message
    assert stopped.value.details["deferred"] == [3]
    rows = stopped.value.details["result"]["rows"]
    assert [(r["row"], r["status"], r["code"]) for r in rows] == [
        (2, "deferred", "TransientSendError"),
    ]
    assert "gave up after 4 tries" in rows[0]["reason"]
    assert [(o.row, o.state, o.uncertain) for o in ledger.outcomes("c-1")] == [
        (2, "released", False),
        (3, "released", False),
    ]

    # AND once the writes work again, the next attempt (a redrive, which lifts the halt) sends
    # each row once, not as a duplicate
    monkeypatch.undo()
    ledger.clear_halt("c-1")
    result = send("child-2")
    assert [(r["status"], "takeover" in r) for r in result.rows] == [("sent", False)] * 2
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 2
    ledger.close()


needs_unnamed_files = pytest.mark.skipif(
    not hasattr(os, "O_TMPFILE"), reason="no O_TMPFILE on this platform"
)


@needs_unnamed_files
def test_message_is_written_unnamed_and_linked_without_a_rename(tmp_path, monkeypatch):
    # GIVEN a file system that makes unnamed files, and renames that would fail
    outbox = MaildirMailer(tmp_path)

    def no_rename(*args, **kwargs):
        raise AssertionError("renamed: the message went through tmp/ under a name")

    monkeypatch.setattr(os, "rename", no_rename)
    # WHEN a message is sent
    raw = raw_message()
    name = outbox.send(raw, sender=SENDER, destinations=["amy@example.com"])
    # THEN it is whole in new/ and tmp/ never held a name
    assert (tmp_path / "new" / name).read_bytes().endswith(raw)
    assert list((tmp_path / "tmp").iterdir()) == []


@needs_unnamed_files
def test_without_unnamed_files_it_writes_and_renames_and_stops_trying(tmp_path, monkeypatch):
    # GIVEN a file system that refuses O_TMPFILE (as some network and FUSE file systems do)
    tries: list[str] = []
    no_unnamed_files(monkeypatch, tries)
    outbox = MaildirMailer(tmp_path)
    # WHEN two messages are sent
    names = [outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"])]
    names.append(outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"]))
    # THEN both are in new/ by the rename path, and only the first send tried O_TMPFILE
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(names)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert tries == [str(tmp_path / "tmp")]


@needs_unnamed_files
def test_without_proc_the_unnamed_file_is_dropped_and_the_message_renamed(tmp_path, monkeypatch):
    # GIVEN no /proc, so an unnamed file cannot be linked by its descriptor
    real_isdir = os.path.isdir

    def link_without_proc(src, *args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", src)

    monkeypatch.setattr(os, "link", link_without_proc)
    monkeypatch.setattr(
        os.path, "isdir", lambda p: False if p == "/proc/self/fd" else real_isdir(p)
    )
    # WHEN a message is sent THEN it still lands whole in new/, nothing left in tmp/
    raw = raw_message()
    name = MaildirMailer(tmp_path).send(raw, sender=SENDER, destinations=["amy@example.com"])
    assert (tmp_path / "new" / name).read_bytes().endswith(raw)
    assert list((tmp_path / "tmp").iterdir()) == []


@needs_unnamed_files
def test_a_close_failing_after_the_link_does_not_undo_the_delivery(tmp_path, monkeypatch):
    # GIVEN an outbox where closing a descriptor reports an error (as NFS may, after the write)
    outbox = MaildirMailer(tmp_path)
    real_close = os.close
    closed = []

    def close_with_error(fd):
        real_close(fd)
        closed.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "close", close_with_error)

    # WHEN a message is sent, written unnamed and linked into new/ before the closes
    raw = raw_message()
    name = outbox.send(raw, sender=SENDER, destinations=["amy@example.com"])

    # THEN the send reports it delivered: it is in new/, and an error would send it twice
    monkeypatch.undo()
    assert len(closed) == 2  # the file and the new/ directory
    assert [p.name for p in (tmp_path / "new").iterdir()] == [name]
    assert (tmp_path / "new" / name).read_bytes().endswith(raw)
    assert list((tmp_path / "tmp").iterdir()) == []
