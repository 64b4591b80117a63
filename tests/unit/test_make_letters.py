"""The example's letter maker also makes letters for a campaign of one's own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "examples" / "offer-letters" / "make_letters.py"


def _make_letters():
    spec = importlib.util.spec_from_file_location("make_letters", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_letters_are_made_for_any_csv_naming_files_and_none_outside_the_folder(tmp_path):
    # GIVEN a CSV of other columns and statuses, one row naming no file, one a path
    source = tmp_path / "leave.csv"
    source.write_text(
        "Email,Name,Status,Attachment_File,Request_Id\n"
        "anna@example.com,Anna Berg,Approved,anna-berg.pdf,LR-1\n"
        "kim@example.com,Kim Nguyen,Offer,kim-nguyen.pdf,LR-2\n"
        "lee@example.com,Lee,Declined,,LR-3\n"
        "max@example.com,Max,Approved,../max.pdf,LR-4\n",
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
