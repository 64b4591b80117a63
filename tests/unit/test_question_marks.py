"""The ? a plain CSV writes for each letter its code page lacks (check_question_marks)."""

from __future__ import annotations

import codecs

import pytest

from mailmatrix.core.templates import load_catalog
from tests.unit.test_recipients import HEADER, FakeCatalog, index_of, reasons, run

EXPORT_AGAIN = (
    "Nothing was sent to this row; saving this CSV again keeps the ?: export the file again"
    " from the workbook (.xlsx) or the source its rows came from, as CSV UTF-8, and run it (if"
    " the ? is meant, put check_question_marks: false in manifest.yaml)"
)
PLAIN = "the file was saved as plain CSV, which writes ? for each letter it cannot encode"


def _plain(text: str) -> bytes:
    """``text`` as a spreadsheet saves it as plain CSV: Windows-1252, ? for what it lacks."""
    return text.encode("cp1252", errors="replace")


def _rows(header: str, *cells: str) -> str:
    """A file of ``header`` and a row for each of ``cells``: its own address and file, and
    ``cells`` (comma-separated) after them."""
    files = ("alice", "bob", "carol", "dave", "erin")[: len(cells)]
    lines = [
        f"p{i}@example.com,active,{name}.pdf,{row}\r\n"
        for i, (name, row) in enumerate(zip(files, cells, strict=True))
    ]
    return header + "".join(lines)


def test_question_marks_between_letters_of_a_plain_csv_reject_the_rows_naming_the_cell():
    # GIVEN a Windows-1252 export whose names lost letters to ?, a question, and a link
    text = (
        "Email,Name,Status,Attachment_File,Note\r\n"
        "alice@example.com,Ma?gorzata Nowak,active,alice.pdf,\r\n"
        "bob@example.com,Bob Example,active,bob.pdf,Was?\r\n"
        "carol@example.com,Carol Example,active,carol.pdf,https://example.com/a?b=c\r\n"
        "dave@example.com,Zoë ?ngström,active,dave.pdf,\r\n"
    )

    # WHEN validated
    report, rows = run(text.encode("cp1252"))

    # THEN the rows with ? inside a word are not sent (the letter would print the ?), each
    # naming its column and cell and what to do, and one warning sums them up; the question
    # and the link go
    assert report.encoding == "cp1252"
    assert [row["row"] for row in rows] == [3, 4]
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Name"), (5, "Name")]
    assert "'Zoë ?ngström'" in reasons(report)[1][2]
    assert reasons(report)[0][2] == (
        f"? in place of a letter in 'Ma?gorzata Nowak': {PLAIN}, and the letter would print it."
        f" {EXPORT_AGAIN}"
    )
    assert report.warnings == [
        "rows 2, 5 have ? in place of a letter ('Ma?gorzata Nowak') and are not sent: the file"
        " was saved as plain CSV, which writes ? for each letter it cannot encode; saving this"
        " CSV again keeps the ?: export the file again from the workbook (.xlsx) or the source"
        " its rows came from, as CSV UTF-8, and run it"
    ]


def test_question_marks_between_letters_go_when_the_manifest_turned_the_check_off():
    catalog = FakeCatalog()
    catalog.check_question_marks = False  # type: ignore[attr-defined]
    text = HEADER.replace("\r\n", ",Recruiter\r\n")
    text += "alice@example.com,Ma?gorzata,active,alice.pdf,?ukasz\r\n"
    report, rows = run(text.encode("cp1252"), catalog=catalog)
    assert (len(rows), reasons(report), report.warnings) == (1, [], [])


def test_names_of_other_scripts_and_letters_lost_at_a_word_end_are_rejected():
    # GIVEN five names saved as plain CSV: whole words of ?, a run of them inside a word, one
    # ending a word (the file is all ASCII then: it reads as UTF-8)
    names = ("Иван Петров", "陈静", "Lech Wałęsa", "Marko Bogdanović", "Νίκος Παπαδόπουλος")
    data = _plain(_rows("Email,Status,Attachment_File,Name\r\n", *names))

    # WHEN validated
    report, rows = run(data)

    # THEN none of them is sent, each naming its garbled name
    assert (report.encoding, rows) == ("utf-8", [])
    shown = [reason.split(":")[0] for _, _, reason in reasons(report)]
    assert shown == [
        "? in place of a letter in '???? ??????'",
        "? in place of a letter in '??'",
        "? in place of a letter in 'Lech Wa??sa'",
        "? in place of a letter in 'Marko Bogdanovi?'",
        "? in place of a letter in '????? ????????????'",
    ]
    assert {column for _, column, _ in reasons(report)} == {"Name"}


@pytest.mark.parametrize(
    ("department", "sent"),
    [
        ("Zespół IT", False),
        ("Cieszymy się na spotkanie", False),
        ("Dział kadr", False),
        ("Inżynier (R&D)", False),
        ("Kierownik działu / Manager", False),
        ("Ready? Go", True),
        ("Any questions?", True),
        ("Was it fun? Yes!", True),
        ("¿Qué? Nada", True),
        ("https://example.com/a?b=c", True),
        ("see example.com/form?id=5&x=y", True),
        ("?utm_source=mail", True),
    ],
    ids=[
        "word-end-after-accent",
        "word-end-then-lower-case",
        "inside-a-word",
        "beside-an-ampersand",
        "beside-a-slash",
        "question",
        "question-at-the-end",
        "question-then-sentence",
        "spanish-question",
        "link",
        "bare-link",
        "query",
    ],
)
def test_a_printed_free_text_column_rejects_lost_letters_not_questions_or_links(department, sent):
    # GIVEN a plain CSV whose letter prints Department
    catalog = FakeCatalog(uses={"offer": {"Name", "Department"}})
    data = _plain(_rows("Email,Status,Attachment_File,Name,Department\r\n", f"Ann,{department}"))

    # WHEN validated
    report, rows = run(data, catalog=catalog)

    # THEN a ? standing for a letter rejects the row, naming the column; a question's or a
    # link's goes
    assert (len(rows), [column for _, column, _ in reasons(report)]) == (
        (1, []) if sent else (0, ["Department"])
    )


def test_each_cell_is_checked_alone_not_glued_to_the_one_before():
    # GIVEN a number column, then a name whose first letter was lost: glued, "1042?ukasz"
    data = _plain(_rows("Email,Status,Attachment_File,Employee_No,Name\r\n", "1042,Łukasz Nowak"))

    # WHEN validated
    report, rows = run(data)

    # THEN the name is found
    assert rows == []
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Name")]


def test_a_question_mark_in_a_name_or_address_column_is_never_the_cells_own():
    # GIVEN names and a file name holding ? where a question's would sit elsewhere
    catalog = FakeCatalog(uses={"offer": {"First_Name"}})
    header = "Email,Status,Attachment_File,First_Name\r\n"
    text = _rows(header, "Ann?", "Bob") + "p9@example.com,active,wh?t.pdf,Cy\r\n"

    # WHEN validated
    report, _ = run(text, catalog=catalog)

    # THEN both rows are rejected: a name or a file's name holds no question
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (2, "First_Name"),
        (4, "Attachment_File"),
    ]


def test_a_file_the_attachments_hold_under_a_name_with_a_question_mark_is_named_so():
    # GIVEN rows naming files with ?, one of which the attachments folder holds
    text = _rows("Email,Status,Attachment_File,Name\r\n", "Ann", "Bob")
    text = text.replace("alice.pdf", "=?utf-8?q?x?=.pdf").replace("bob.pdf", "Wa??sa.pdf")

    # WHEN validated
    report, rows = run(text, index=index_of("=?utf-8?q?x?=.pdf"))

    # THEN the file held goes; the one not held is a name that lost letters
    assert [row["row"] for row in rows] == [2]
    assert [reason.split(": ")[0] for _, _, reason in reasons(report)] == [
        "? in place of a letter in 'Wa??sa.pdf'"
    ]


def test_a_column_no_template_prints_warns_of_lost_letters_and_its_rows_go():
    # GIVEN a plain CSV whose Recruiter column lost letters, which no template prints
    header = "Email,Status,Attachment_File,Name,Recruiter\r\n"
    data = _plain(_rows(header, "Ann,Łukasz Nowak", "Bob,Ewa Kowalska", "Cy,Paweł Zając"))

    # WHEN validated
    report, rows = run(data)

    # THEN the rows go (their letters do not show the ?) and a warning says the file lost
    # letters and how to get them back
    assert ([row["row"] for row in rows], reasons(report)) == ([2, 3, 4], [])
    assert report.warnings == [
        "rows 2, 4 have ? in place of a letter in a column no template prints (Recruiter:"
        " '?ukasz Nowak') and are sent all the same: the file was saved as plain CSV, which"
        " writes ? for each letter it cannot encode; saving this CSV again keeps the ?: export"
        " the file again from the workbook (.xlsx) or the source its rows came from, as CSV"
        " UTF-8, to have the letters back"
    ]

    # WHEN a template prints Recruiter THEN those rows are rejected
    catalog = FakeCatalog(uses={"offer": {"Name", "Recruiter"}})
    report, rows = run(data, catalog=catalog)
    assert [row["row"] for row in rows] == [3]
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (2, "Recruiter"),
        (4, "Recruiter"),
    ]


def test_a_plain_csv_saved_again_as_csv_utf8_still_has_its_lost_letters_rejected():
    # GIVEN a file saved as plain CSV, then opened and saved as CSV UTF-8 (with BOM)
    names = _rows("Email,Status,Attachment_File,Name\r\n", "Lech Wałęsa", "Zoë Müller")
    data = codecs.BOM_UTF8 + _plain(names).decode("cp1252").encode()

    # WHEN validated
    report, rows = run(data)

    # THEN the name that lost letters is still rejected, saying the letters were lost before
    # the file became UTF-8 and that saving it again does not bring them back
    assert report.encoding == "utf-8-sig"
    assert [row["row"] for row in rows] == [3]
    assert reasons(report) == [
        (
            2,
            "Name",
            "? in place of a letter in 'Lech Wa??sa': the file was saved as plain CSV (which"
            " writes ? for each letter it cannot encode) before it was saved as Unicode, and the"
            f" letter would print it. {EXPORT_AGAIN}",
        )
    ]


def test_a_long_cell_is_shown_around_its_lost_letter():
    catalog = FakeCatalog(uses={"offer": {"Name", "Note"}})
    note = "We are glad to welcome you to the team in Gdańsk next Monday morning"
    data = _plain(_rows("Email,Status,Attachment_File,Name,Note\r\n", f"Ann,{note}"))
    report, _ = run(data, catalog=catalog)
    assert "'u to the team in Gda?sk next Monday morn'" in reasons(report)[0][2]


def test_the_columns_a_real_catalog_prints_are_those_its_templates_use_by_name_or_row():
    # GIVEN templates printing Name and, through row, Department; nothing prints Recruiter
    catalog = load_catalog(
        {
            "manifest.yaml": "sets:\n  offer:\n    when: [Active]\n",
            "offer/subject.txt": "Welcome, {{ Name }}",
            "offer/body.txt": "Your team: {{ row['Department'] }}",
        }
    )
    header = "Email,Status,Attachment_File,Name,Department,Recruiter\r\n"
    data = _plain(_rows(header, "Ann,Dział kadr,Ewa", "Bob,IT,Paweł Zając"))

    # WHEN validated
    report, rows = run(data, catalog=catalog)  # type: ignore[arg-type]

    # THEN Department's lost letter rejects its row; Recruiter's is only warned of
    assert [row["row"] for row in rows] == [3]
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Department")]
    assert [warning.split(" and ")[0] for warning in report.warnings] == [
        "row 2 has ? in place of a letter ('Dzia? kadr')",
        "row 3 has ? in place of a letter in a column no template prints (Recruiter: 'Pawe?"
        " Zaj?c')",
    ]


def test_a_row_skipped_by_its_status_is_skipped_whatever_its_question_marks():
    # GIVEN a plain CSV whose unsubscribed row's name lost a letter
    data = _plain(_rows("Email,Status,Attachment_File,Name\r\n", "Łukasz", "Ann"))
    data = data.replace(b"p0@example.com,active", b"p0@example.com,unsubscribed")

    # WHEN validated
    report, rows = run(data)

    # THEN it is skipped as its Status says (no letter prints its name), not rejected
    assert ([row["row"] for row in rows], reasons(report)) == ([3], [])
    assert [item["row"] for item in report.skipped] == [2]
    assert report.warnings == []
