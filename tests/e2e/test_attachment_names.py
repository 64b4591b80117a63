"""An attachment goes out under its file's own name, whatever that name looks like."""

from __future__ import annotations

import email
import email.policy

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.core.message import build_message, message_bytes
from mailmatrix.core.templates import Rendered

# Names shaped like RFC 2047 encoded-words: a parser that decoded them would read "x.pdf"
# and "../../evil.exe"
ENCODED_WORD_NAMES = ["=?utf-8?q?x?=.pdf", "=?utf-8?b?Li4vLi4vZXZpbC5leGU=?="]


def _attachment_names(raw: bytes) -> set[str | None]:
    """The file name and the Content-Type's name (if any) the stdlib parser reads."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    [attachment] = message.iter_attachments()
    names = {attachment.get_filename()}
    if attachment.get_param("name") is not None:
        names.add(str(attachment.get_param("name")))
    return names


def test_a_file_named_like_an_encoded_word_goes_out_under_its_own_name(tmp_path):
    # GIVEN two rows whose attachments are named like MIME encoded-words
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "subject.txt").write_text("Hi {{ Name }}")
    (templates / "body.txt").write_text("Dear {{ Name }},\nyour letter is attached.\n")
    (tmp_path / "attachments").mkdir()
    for name in ENCODED_WORD_NAMES:
        (tmp_path / "attachments" / name).write_bytes(b"%PDF-1.4 " + name.encode())
    letters = tmp_path / "letters.csv"
    letters.write_text(
        "Email,Name,Attachment_File\n"
        f"ann@example.com,Ann,{ENCODED_WORD_NAMES[0]}\nbob@example.com,Bob,{ENCODED_WORD_NAMES[1]}\n"
    )

    # WHEN the file runs to the outbox
    options = ["--templates", str(templates), "--workdir", str(tmp_path / "wd")]
    result = CliRunner().invoke(
        cli, ["run", str(letters), *options, "--sender", "HR <hr@example.com>"]
    )

    # THEN each message's attachment reads back under the file's real name
    assert result.exit_code == 0, result.output
    sent = {}
    for path in (tmp_path / "wd" / "outbox" / "new").iterdir():
        raw = path.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        sent[message["To"].addresses[0].addr_spec] = _attachment_names(raw)
    assert sent == {
        "ann@example.com": {ENCODED_WORD_NAMES[0]},
        "bob@example.com": {ENCODED_WORD_NAMES[1]},
    }


@pytest.mark.parametrize("name", ENCODED_WORD_NAMES, ids=["q-word", "b-word"])
def test_the_message_tree_keeps_an_encoded_word_file_name_literal(name):
    # GIVEN a message built as an EmailMessage (the path a boundary clash takes)
    rendered = Rendered(subject="Hi", html=None, text="x\n")
    message = build_message(
        sender="HR <hr@example.com>",
        to_name=None,
        to_email="ann@example.com",
        rendered=rendered,
        attachment=(name, b"%PDF-1.4"),
    )

    # THEN its attachment reads back under the literal name
    assert _attachment_names(message_bytes(message)) == {name}
