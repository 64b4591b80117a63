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

from mailmatrix.adapters.mailer_maildir import ENVELOPE_TO_HEADER, MaildirMailer
from mailmatrix.core.message import build_message, message_bytes
from mailmatrix.core.templates import Rendered
from mailmatrix.errors import AccountSendingHalted, PermanentSendError, TransientSendError

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


def test_outbox_that_cannot_be_created_halts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AccountSendingHalted, match=r"cannot create the outbox"):
        MaildirMailer(blocker / "outbox")


def test_write_failure_is_transient_and_leaves_nothing_behind(tmp_path):
    outbox = MaildirMailer(tmp_path)
    shutil.rmtree(tmp_path / "new")
    (tmp_path / "new").write_text("in the way")  # the rename into new/ now fails
    with pytest.raises(TransientSendError, match=r"^maildir .*: cannot write "):
        outbox.send(raw_message(), sender=SENDER, destinations=["amy@example.com"])
    assert list((tmp_path / "tmp").iterdir()) == []


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
    real_open = os.open
    tries = []

    def open_without_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            tries.append(path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_without_tmpfile)
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
