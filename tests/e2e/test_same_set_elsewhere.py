"""A re-export of a file under a new name does not mail its people a second letter of the set
they had already, even where the export changed its text (a name spelt anew, as an old
"CSV" export in cp1252 turns "ł" into "?", which validation rejects, or an export that writes
it as "l"): the ledger keeps a hash of each letter's address and set, and a row whose address
had a letter of its set under another file is held back, unless --send-again-from names that
file. A letter of another set is not held back so."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailmatrix.cli.main import cli
from tests.e2e.test_letter_copies import HEADER, _cli, _outbox
from tests.e2e.test_renamed_announcement import _announced, _run
from tests.e2e.test_renamed_copy import _rejects

# Kim's row of news.csv as a spreadsheet exported it again in cp1252: her name spelt anew
# ("Małgorzata" as "Malgorzata"; one exported as "Ma?gorzata" is rejected, see test_recipients).
GARBLED = "kim@example.com,Malgorzata,Offer,,Dev,IT,2027-01-11,1\n"
ANNA = "anna@example.com,Anna,Offer,,Dev,IT,2027-01-11,1\n"


def _reexported(folder: Path, name: str, *rows: str) -> Path:
    """A re-export of news.csv named ``name``: ``rows``, in cp1252."""
    path = folder / name
    path.write_bytes((HEADER + "".join(rows)).encode("cp1252"))
    return path


def _recipients(workdir: Path) -> list[str]:
    """The To addresses of the outbox's letters, oldest first."""
    letters = sorted(_outbox(workdir), key=lambda path: path.stat().st_mtime_ns)
    texts = [path.read_text(encoding="utf-8", errors="replace") for path in letters]
    return [next(line for line in text.splitlines() if line.startswith("To:")) for text in texts]


def test_a_reexport_with_a_name_spelt_anew_holds_the_letter_back_unless_named(tmp_path):
    # GIVEN news.csv sent (Anna, Kim), and a re-export under a new name whose Kim row reads
    # "Malgorzata", and which adds Lee, a new person
    news, workdir = _announced(tmp_path)
    lee = "lee@example.com,Lee,Offer,,Dev,IT,2027-01-11,1\n"
    export = _reexported(tmp_path, "news-export.csv", ANNA, GARBLED, lee)

    # WHEN the re-export is run
    result = _run(export, workdir, codes=(0,))

    # THEN only Lee's letter goes out; Anna's and Kim's are counted as sent under news.csv
    counts = result["counts"]
    assert (counts["sent"], counts["sent_under"], counts["rejected"]) == (1, 2, 0)
    assert len(_outbox(workdir)) == 3
    assert "lee@example.com" in _recipients(workdir)[-1]
    # AND Kim's row says which set went under which file, and how to send it all the same
    held = {line["row"]: line["reason"] for line in _rejects(result)}
    assert held["3"].startswith(
        "a letter of the set 'offer' went to the local outbox under news.csv (campaign c-"
    )
    assert " UTC (row 3 of that run; a trial?), not to this address" in held["3"]
    assert held["3"].endswith("To send it for real, run this file with --send-again-from news.csv")

    # WHEN it is run again naming news.csv to send again
    again = _run(export, workdir, "--send-again-from", str(news), codes=(0,))

    # THEN Anna's and Kim's letters go out (Lee's went already)
    assert (again["counts"]["sent"], again["counts"]["sent_under"]) == (2, 0)
    assert len(_outbox(workdir)) == 5


def test_validate_forecasts_the_rows_held_for_their_set_under_another_file(tmp_path):
    # GIVEN news.csv sent, and a re-export with Kim's name garbled
    _, workdir = _announced(tmp_path)
    export = _reexported(tmp_path, "news-export.csv", GARBLED)

    # WHEN the re-export is validated
    templates = str(tmp_path / "templates")
    code, output = _cli(
        "validate", str(export), "--workdir", str(workdir), "--templates", templates, "--json"
    )

    # THEN it exits 0 and forecasts Kim's row held back, naming news.csv
    found = json.loads(output)
    assert (code, found["valid"]) == (0, 0), output
    assert [(item["row"], item["file"]) for item in found["skipped"]] == [(2, "news.csv")]
    assert len(_outbox(workdir)) == 2


def test_a_letter_of_another_set_under_another_file_is_not_held_back_by_the_set(tmp_path):
    # GIVEN news.csv sent (Kim had an offer), and a re-export where Kim's Status is Rejection
    _, workdir = _announced(tmp_path)
    rejection = GARBLED.replace(",Offer,", ",Rejection,")
    export = _reexported(tmp_path, "news-rejections.csv", rejection)

    # WHEN it is run THEN her letter of the other set is no letter of the set she had: it
    # goes (only a file's own letters of two sets refuse each other: OtherLetterSent)
    result = _run(export, workdir, codes=(0,))
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (1, 0)
    assert len(_outbox(workdir)) == 3


def test_validate_and_the_runs_advice_say_a_letter_of_the_set_went_not_the_same_letter(tmp_path):
    # GIVEN news.csv sent (Anna, Kim), and a re-export with Kim's name spelt anew
    _, workdir = _announced(tmp_path)
    export = _reexported(tmp_path, "news-export.csv", GARBLED)

    # WHEN the re-export is validated, then run
    templates = str(tmp_path / "templates")
    options = [str(export), "--workdir", str(workdir), "--templates", templates]
    validated = CliRunner().invoke(cli, ["validate", *options])
    shown = CliRunner().invoke(cli, ["run", *options])

    # THEN validate says her row had a letter of its set there, not the same letter (into
    # the outbox: news.csv ran without --smtp)
    said = " ".join(validated.output.split())
    assert (
        "1 of these rows (row 2) had a letter of the same template set go only to the local"
        " outbox under news.csv (a trial?), not to the addresses (not the same letters: the text"
        " or attachment may differ, a name spelt anew, say; each reason names the set); the"
        " ledger counts them sent, so they will not be sent here. To send them for real: `run"
        " --smtp URL --send-again-from news.csv` in this workdir"
    ) in said
    assert "the same attachments" not in said
    # AND the run's advice says a letter of the same set went to her address under news.csv,
    # not that the same letter did
    said = " ".join(shown.output.split())
    assert shown.exit_code == 0, shown.output
    assert (
        "1 row(s) not sent: a letter of the same set went to that address under news.csv (each"
        " reason above names the set; its text may differ: a name spelt anew, say). To send"
        " them all the same on purpose, run this file with --send-again-from news.csv."
    ) in said
    assert "the same letter already went" not in said


def test_a_plain_csv_row_whose_name_lost_a_letter_to_a_question_mark_is_not_sent(tmp_path):
    # GIVEN a new file exported as plain CSV (cp1252): Lee's row fine, Kim's name "Ma?gorzata"
    _, workdir = _announced(tmp_path)
    lee = "lee@example.com,Lee,Offer,,Dev,IT,2027-01-11,1\n"
    garbled = "kim.new@example.com,Ma?gorzata,Offer,,Dev,IT,2027-01-11,1\n"
    export = _reexported(tmp_path, "newcomers.csv", lee, garbled)

    # WHEN it is run
    result = _run(export, workdir)

    # THEN Lee's letter goes, and Kim's row is rejected naming the cell and what to do: no
    # letter printing "Ma?gorzata" went out
    assert (result["counts"]["sent"], result["counts"]["rejected"]) == (1, 1)
    assert all("kim.new@" not in to for to in _recipients(workdir))
    reason = {line["row"]: line["reason"] for line in _rejects(result)}["3"]
    assert reason.startswith("? in place of a letter in 'Ma?gorzata': the file was saved as plain")
    assert "export the file again from the workbook (.xlsx) or the source" in reason
    # AND the run passes on validation's warning of it (the console prints it too, below)
    assert [w[:50] for w in result["validation_warnings"]] == [
        "row 3 has ? in place of a letter ('Ma?gorzata') an"
    ]

    # WHEN a corrected file is run to the console THEN the warning of a row still garbled
    # ends its summary
    kept = "ann@example.com,Ann,Offer,,Dev,IT,2027-01-11,1\n"
    again = _reexported(tmp_path, "newcomers-2.csv", kept, garbled.replace("kim.new", "k2"))
    templates = str(tmp_path / "templates")
    shown = CliRunner().invoke(
        cli, ["run", str(again), "--workdir", str(workdir), "--templates", templates]
    )
    said = " ".join(shown.output.split())
    assert "Warning: row 3 has ? in place of a letter ('Ma?gorzata') and is not sent" in said
