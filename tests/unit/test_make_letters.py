"""The example's letter maker also makes letters for a campaign of one's own."""

from __future__ import annotations

import importlib.util
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "examples" / "offer-letters" / "make_letters.py"


def _make_letters():
    spec = importlib.util.spec_from_file_location("make_letters", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_letters_are_made_for_any_csv_naming_files_and_none_outside_the_folder(tmp_path):
    # GIVEN a CSV of other columns and statuses, one row naming no file, one a path, two
    # the folder itself or its parent
    source = tmp_path / "leave.csv"
    source.write_text(
        "Email,Name,Status,Attachment_File,Request_Id\n"
        "anna@example.com,Anna Berg,Approved,anna-berg.pdf,LR-1\n"
        "kim@example.com,Kim Nguyen,Offer,kim-nguyen.pdf,LR-2\n"
        "lee@example.com,Lee,Declined,,LR-3\n"
        "max@example.com,Max,Approved,../max.pdf,LR-4\n"
        "ola@example.com,Ola,Approved,..,LR-5\n"
        "pat@example.com,Pat,Approved,.,LR-6\n",
        encoding="utf-8",
    )
    out = tmp_path / "letters"
    # WHEN the letters are made into a folder of one's own
    code = _make_letters().main([str(source), str(out)])
    # THEN each row naming a bare file name has its PDF there, and nothing else is written
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == ["anna-berg.pdf", "kim-nguyen.pdf"]
    assert all(path.read_bytes().startswith(b"%PDF-") for path in out.iterdir())
    assert not (tmp_path / "max.pdf").exists()


def test_letters_are_made_under_the_header_names_mailmatrix_accepts(tmp_path):
    # GIVEN a CSV naming its files under "Attachment", and its people under "Full Name"
    source = tmp_path / "offers.csv"
    source.write_text(
        "E-mail,Full Name,Status,Attachment\nann@example.com,Ann Lee,Offer,ann-lee.pdf\n",
        encoding="utf-8",
    )
    out = tmp_path / "letters"
    # WHEN the letters are made THEN the row's file is written, as run would look for it
    assert _make_letters().main([str(source), str(out)]) == 0
    assert [path.name for path in out.iterdir()] == ["ann-lee.pdf"]


def test_a_wrong_number_of_arguments_is_a_usage_error(capsys):
    assert _make_letters().main(["only-one.csv"]) == 2
    assert "usage: make_letters.py" in capsys.readouterr().err


@pytest.fixture
def same_second(monkeypatch):
    """The letter maker, its PDFs all made at one moment and in Helvetica (its text then
    stands in the page as written)."""
    module = _make_letters()

    class OneMoment(module.FPDF):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.set_creation_date(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))

    monkeypatch.setattr(module, "FPDF", OneMoment)
    monkeypatch.setattr(module, "FONT_DIRS", [])
    return module


def _page_text(pdf: bytes) -> str:
    """The text drawn on a PDF's pages (Helvetica: the strings of the Tj operators)."""
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.DOTALL)
    text = []
    for stream in streams:
        try:
            text.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            continue
    return " ".join(re.findall(r"\((.*?)\) ?Tj", " ".join(text)))


def test_the_name_is_read_under_any_header_the_tool_accepts(same_second, tmp_path):
    # GIVEN a CSV whose Name column is headed "Full Name" and Email column "E-mail Address"
    source = tmp_path / "offers.csv"
    source.write_text(
        "E-mail Address;Full Name;Status;Attachment File\n"
        "anna@example.com;Anna Berg;Approved;anna.pdf\n",
        encoding="utf-8",
    )
    # WHEN the letters are made
    assert same_second.main([str(source), str(tmp_path / "out")]) == 0
    # THEN the letter greets the person by name and names their row and address
    text = _page_text((tmp_path / "out" / "anna.pdf").read_bytes())
    assert "Dear Anna Berg," in text and "Dear candidate" not in text
    assert "Reference: row 2, anna@example.com" in text


def test_two_rows_alike_made_in_the_same_second_get_letters_of_their_own(same_second, tmp_path):
    # GIVEN two rows of one position whose letters would read the same (no name given)
    source = tmp_path / "offers.csv"
    row = "Offer,Engineer,Data,2027-01-01,1"
    source.write_text(
        "Email,Status,Position,Department,Start_Date,Salary,Attachment_File\n"
        f"ann@example.com,{row},ann.pdf\n"
        f"bob@example.com,{row},bob.pdf\n",
        encoding="utf-8",
    )
    # WHEN their letters are made at one moment
    assert same_second.main([str(source), str(tmp_path / "out")]) == 0
    # THEN the files differ (validation rejects one person's letter copied to another)
    ann, bob = ((tmp_path / "out" / name).read_bytes() for name in ("ann.pdf", "bob.pdf"))
    assert ann != bob


def test_letters_already_there_are_kept_unless_overwrite_is_given(tmp_path, capsys):
    # GIVEN a letter made and, say, sent; then a row added to the CSV
    source = tmp_path / "offers.csv"
    source.write_text(
        "Email,Name,Status,Attachment_File\nann@example.com,Ann Lee,Offer,ann-lee.pdf\n",
        encoding="utf-8",
    )
    out = tmp_path / "letters"
    assert _make_letters().main([str(source), str(out)]) == 0
    sent = (out / "ann-lee.pdf").read_bytes()
    with source.open("a", encoding="utf-8") as csv:
        csv.write("bo@example.com,Bo Berg,Offer,bo-berg.pdf\n")
    capsys.readouterr()

    # WHEN the letters are made again
    assert _make_letters().main([str(source), str(out)]) == 0

    # THEN only the new row's letter is written: the one sent keeps its bytes
    assert (out / "ann-lee.pdf").read_bytes() == sent
    assert (out / "bo-berg.pdf").exists()
    assert "1 letter(s) written" in capsys.readouterr().out

    # AND --overwrite writes every letter anew
    assert _make_letters().main(["--overwrite", str(source), str(out)]) == 0
    assert "2 letter(s) written" in capsys.readouterr().out


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["kept", "overwrite"])
def test_a_file_named_by_two_rows_is_counted_as_theirs_not_as_one_already_there(
    same_second, tmp_path, capsys, overwrite
):
    # GIVEN a CSV whose fourth row names the second's file again (a row copied)
    source = tmp_path / "offers.csv"
    source.write_text(
        "Email,Name,Status,Attachment_File\n"
        "ann@example.com,Ann Lee,Offer,ann-lee.pdf\n"
        "bo@example.com,Bo Berg,Offer,bo-berg.pdf\n"
        "ann@example.com,Ann Lee,Offer,ann-lee.pdf\n",
        encoding="utf-8",
    )
    out = tmp_path / "letters"

    # WHEN the letters are made into an empty folder
    assert same_second.main([*overwrite, str(source), str(out)]) == 0

    # THEN two are written, none said to be there already, and the copied row is named; the
    # letter stays the row's that named it first
    said = capsys.readouterr().out
    assert said == (
        f"2 letter(s) written into {out}; 1 row(s) named the file of an earlier row, whose"
        " letter it is: not written again\n"
    )
    assert "Reference: row 2, ann@example.com" in _page_text((out / "ann-lee.pdf").read_bytes())
