"""Validation forecasts what the run does: numbers read by int and float on every row, names
templates set themselves, sets no row picks, files a set does not attach, near-miss names."""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

import pytest

from mailmatrix.core.templates import Catalog, load_catalog
from mailmatrix.errors import TemplateError
from tests.unit.test_recipients import index_of, reasons, run

MANIFEST = """
column: Status
sender: "Acme <hr@example.com>"
sets:
  offer:
    when: [Offer]
    attachment: optional
  rejection:
    when: [Rejection]
    attachment: none
"""


def catalog(**files: str) -> Catalog:
    """A catalog of the sets offer and rejection, their files as given (``offer__body.txt``)."""
    base = {
        "manifest.yaml": MANIFEST,
        "offer/subject.txt": "Your offer, {{ Name }}",
        "offer/body.txt": "Dear {{ Name }},\n",
        "rejection/subject.txt": "Your application, {{ Name }}",
        "rejection/body.txt": "Dear {{ Name }},\n",
    }
    base.update({key.replace("__", "/"): value for key, value in files.items()})
    return load_catalog(base)


class Outcome(NamedTuple):
    """What validation said of a file: the rows passed on, those rejected, the warnings."""

    rows: list[dict]
    rejected: list[tuple[int, str, str]]
    warnings: list[str]


def validate(text: str, templates: Catalog, *files: str) -> Outcome:
    """Validate the CSV ``text`` against ``templates``, the attachments holding ``files``."""
    report, rows = run(text, catalog=templates, index=index_of(*(files or ("x.pdf",))))
    with report:
        return Outcome(rows, reasons(report), list(report.warnings))


# --- names a template sets itself ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "{% if Name %}{% set n = 1 %}{% endif %}{{ n | default(0) }}",
        "{% if Name %}{% set n %}x{% endset %}{% endif %}{{ n | default('') }}",
        "{% for item in [1] %}{% endfor %}{% if Name %}{% set item = 2 %}{% endif %}",
        "{% macro greet(who) %}{{ who }}{% endmacro %}{{ greet(Name) }}",
        "{% with total = 1 %}{{ total }}{% endwith %}",
    ],
    ids=["set-in-if", "set-block", "for-target", "macro-arg", "with"],
)
def test_names_a_template_assigns_are_never_required_as_columns(body):
    # GIVEN a body assigning a name somewhere (inside an if, a block, a loop, a macro...)
    templates = catalog(**{"offer__body.txt": body})

    # WHEN checked against a file without such a column THEN nothing is missing
    assert templates.check_columns(["Email", "Name", "Status"]) == []
    assert "n" not in templates.variables("offer")


# --- every row's numbers ---------------------------------------------------------------------

SALARIES = ["85000", "92000", "$85,000", "71000", "92k", "80000"]


def salary_file(salaries: list[str]) -> str:
    lines = ["Email,Name,Status,Salary"]
    lines += [f'p{i}@example.com,Pat {i},Offer,"{pay}"' for i, pay in enumerate(salaries)]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize(
    "expression",
    ["Salary | int", "Salary | trim | float", 'row["Salary"] | replace(" ", "") | int'],
    ids=["int", "through-trim", "through-row"],
)
def test_every_row_whose_number_the_send_could_not_read_is_rejected_at_validation(expression):
    # GIVEN an offer printing a salary read as a number, and rows after the first whose
    # salary no int or float reads
    templates = catalog(**{"offer__body.txt": f"Dear {{{{ Name }}}}, {{{{ {expression} }}}}\n"})

    # WHEN the file is validated
    rows, rejected, _ = validate(salary_file(SALARIES), templates)

    # THEN those rows are rejected, each with the words its send would fail with
    assert [row["row"] for row in rows] == [2, 3, 5, 7]
    failed = {row: reason for row, _, reason in rejected}
    assert sorted(failed) == [4, 6]
    for row, pay in ((4, "$85,000"), (6, "92k")):
        with pytest.raises(TemplateError) as sent:
            templates.render("offer", {"Name": "Pat", "Status": "Offer", "Salary": pay})
        assert sent.value.message.split(" (from column")[0] in failed[row]
        assert failed[row].startswith("its letter does not render: offer/body.txt: render:")


@pytest.mark.parametrize(
    "body",
    [
        "Dear {{ Name }}, {{ row.Salary | int }}\n",
        'Dear {{ Name }}, {{ row.get("Salary") | trim | int }}\n',
        "{% set pay = Salary %}Dear {{ Name }}, {{ pay | int }}\n",
        '{% set pay = row["Salary"] | trim %}Dear {{ Name }}, {{ pay | float }}\n',
    ],
    ids=["row-attribute", "row-get", "alias", "alias-through-filters"],
)
def test_a_number_read_through_row_or_a_name_set_to_the_column_is_forecast_on_every_row(body):
    # GIVEN an offer reading the salary as a number through row or a name set to it
    templates = catalog(**{"offer__body.txt": body})

    # WHEN validated
    rows, rejected, _ = validate(salary_file(SALARIES), templates)

    # THEN each later row whose send would fail is rejected, and only those
    assert [row["row"] for row in rows] == [2, 3, 5, 7]
    assert sorted(row for row, _, _ in rejected) == [4, 6]


def test_a_macro_or_import_at_the_top_of_a_child_template_is_no_column():
    # GIVEN a child template defining a macro and importing one outside its blocks
    body = (
        '{% extends "layout/base.txt" %}{% macro money(v) %}{{ v }} EUR{% endmacro %}'
        '{% from "layout/macros.txt" import greet %}'
        "{% block body %}{{ greet(Name) }} {{ money(Salary) }}{% endblock %}"
    )
    templates = catalog(
        **{
            "layout__base.txt": "{% block body %}{% endblock %}\n",
            "layout__macros.txt": "{% macro greet(who) %}Dear {{ who }},{% endmacro %}",
            "offer__body.txt": body,
        }
    )

    # WHEN checked against the file's columns THEN nothing is missing, and the letter renders
    assert templates.check_columns(["Email", "Name", "Status", "Salary"]) == []
    rendered = templates.render("offer", {"Name": "Pat", "Salary": "85000"})
    assert rendered.text == "Dear Pat, 85000 EUR\n"


def test_a_number_read_behind_a_guard_rejects_only_rows_that_reach_it():
    # GIVEN a salary read as a number only for rows whose Salary is not "n/a"
    body = 'Dear {{ Name }}{% if Salary != "n/a" %}, {{ Salary | int }}{% endif %}\n'
    templates = catalog(**{"offer__body.txt": body})

    # WHEN rows with "n/a" (never read) and "92k" (read) are validated
    rows, rejected, _ = validate(salary_file(["85000", "n/a", "92k", "n/a"]), templates)

    # THEN only the row whose send would fail is rejected
    assert [row["row"] for row in rows] == [2, 3, 5]
    assert [row for row, _, _ in rejected] == [4]


def test_numbers_read_with_a_default_or_of_the_templates_own_names_are_not_checked():
    # GIVEN a salary read with a default, and a name of the template's own read as a number
    body = "{{ Salary | int(0) }} {% set Pay = '1' %}{{ Pay | int }}\n"
    templates = catalog(**{"offer__body.txt": body})

    # WHEN validated THEN no row is rejected (the send prints 0 for 92k)
    rows, rejected, _ = validate(salary_file(SALARIES), templates)
    assert len(rows) == len(SALARIES)
    assert rejected == []


# --- a hint fitting the value ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("salary", "recipe", "number"),
    [
        ("$120,000", '| replace("$", "") | replace(",", "") | int', "120000"),
        ("$85,000.00", '| replace("$", "") | replace(",", "") | float | int', "85000"),
        ("85.000 €", '| replace("€", "") | replace(".", "") | trim | int', "85000"),
        ("1.234.567", '| replace(".", "") | int', "1234567"),
    ],
    ids=["dollars", "dollars-and-cents", "euros", "millions"],
)
def test_the_hint_names_the_values_own_signs_and_its_filters_print_the_number(
    salary, recipe, number
):
    # GIVEN an offer reading the salary with int, and a salary int cannot read
    templates = catalog(**{"offer__body.txt": "{{ Salary | int }}\n"})
    with pytest.raises(TemplateError) as caught:
        templates.render("offer", {"Name": "Pat", "Salary": salary})

    # THEN the hint gives the filters for this value, no decimal separator removed
    assert recipe in caught.value.message
    assert "€" not in caught.value.message.replace(salary, "") or "€" in salary

    # AND followed, the template prints the number the value shows
    mended = catalog(**{"offer__body.txt": f"{{{{ Salary {recipe} }}}}\n"})
    assert mended.render("offer", {"Name": "Pat", "Salary": salary}).text == number + "\n"


@pytest.mark.parametrize("salary", ["92k", "85k", "n/a"])
def test_a_value_showing_no_number_is_told_to_be_written_as_digits(salary):
    templates = catalog(**{"offer__body.txt": "{{ Salary | int }}\n"})
    with pytest.raises(TemplateError) as caught:
        templates.render("offer", {"Name": "Pat", "Salary": salary})

    # THEN the CSV is to be mended; the default is said to print 0, not offered as a fix
    assert caught.value.message.endswith(
        ": write it in the CSV as digits only (a default, | int(0), would print 0 for such values)"
    )
    assert "replace(" not in caught.value.message


# --- sets no row picks -----------------------------------------------------------------------

OLDER_FILE = "Email,Name,Status\r\nann@example.com,Ann,Offer\r\nbob@example.com,Bob,Rejection\r\n"


def with_reminder() -> Catalog:
    """The offer and rejection sets, and a reminder set added later, printing Manager."""
    templates = catalog(
        **{
            "manifest.yaml": MANIFEST + "  reminder:\n    when: [Reminder]\n    attachment: none\n",
            "reminder__subject.txt": "A reminder, {{ Name }}",
            "reminder__body.txt": "{{ Manager }} is waiting for you\n",
        }
    )
    return templates


def test_a_set_no_row_picks_does_not_stop_an_older_file_for_its_columns():
    # GIVEN a set added later, printing a column older files lack, and an older file
    # WHEN the older file is validated THEN its rows pass and the set is said nowhere
    rows, rejected, warnings = validate(OLDER_FILE, with_reminder())
    assert [row["row"] for row in rows] == [2, 3]
    assert rejected == []
    assert not any("reminder" in warning for warning in warnings)


def test_the_first_row_picking_a_set_stops_the_file_for_its_columns():
    # GIVEN the older file with a row picking the new set
    text = OLDER_FILE + "cy@example.com,Cy,Reminder\r\n"

    # WHEN validated THEN the file stops, with the words it stopped with before
    with pytest.raises(TemplateError) as caught:
        validate(text, with_reminder())
    assert caught.value.message == (
        "incoming/test.csv: templates do not fit the columns: reminder/body.txt: Manager —"
        " not CSV columns (available: Email, Name, Status)"
    )


# --- files a set does not attach -------------------------------------------------------------


def test_rows_naming_a_file_their_set_does_not_attach_are_warned_of_once():
    # GIVEN rejections (attachment: none) of which rows 4 and 9 name a file, and an offer
    # (optional) naming one
    lines = ["Email,Name,Status,Attachment_File", "o@example.com,Olga,Offer,olga.pdf"]
    for i in range(3, 11):
        named = f"r{i}.pdf" if i in (4, 9) else ""
        lines.append(f"r{i}@example.com,Rita {i},Rejection,{named}")
    text = "\r\n".join(lines) + "\r\n"

    # WHEN validated
    rows, rejected, warnings = validate(text, catalog(), "olga.pdf", "r4.pdf", "r9.pdf")

    # THEN every row goes, the rejections without files, and one warning names the rows
    assert len(rows) == 9 and rejected == []
    assert [row["attachment"] for row in rows if row["template"] == "rejection"] == [None] * 8
    assert warnings == [
        "rows 4, 9 name a file in Attachment_File but their set 'rejection' sends none"
        " (attachment: none in manifest.yaml): the files are not attached"
    ]


def test_a_set_attaching_nothing_is_not_warned_of_when_no_row_names_a_file():
    text = "Email,Name,Status,Attachment_File\r\nr@example.com,Rita,Rejection,\r\n"
    assert validate(text, catalog()).warnings == []


# --- near-miss file names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "listed"),
    [
        ("Jane O’Brien.pdf", "Jane O'Brien.pdf"),
        ("Jane O'Brien.pdf", "Jane O’Brien.pdf"),
        ("“Jane”.pdf", '"Jane".pdf'),
        ("Jane Doe .pdf", "Jane Doe.pdf"),
        ("Jane  Doe.pdf", "Jane Doe.pdf"),
        ("Jane Doe.pdf", "Jane Doe.pdf "),
        ("Jane Doe.pdf", "Jane  Doe.pdf"),
        ("Zoë Berg.PDF", "Zoe\u0308 Berg.pdf"),
    ],
    ids=[
        "curly-apostrophe",
        "straight-apostrophe",
        "curly-quotes",
        "space-before-extension",
        "doubled-space",
        "trailing-space-listed",
        "doubled-space-listed",
        "nfd-listed",
    ],
)
def test_a_near_miss_file_name_gets_a_did_you_mean(cell, listed):
    # GIVEN attachments holding one file, and a cell naming it with another quote or spacing
    index = index_of(listed, "other.pdf")

    # WHEN the cell is looked up THEN it is not found, and the file is suggested
    problem = index.lookup(cell).problem
    assert problem is not None
    assert problem.startswith("attachment not found: ")
    assert problem.endswith("(did you mean " + unicodedata.normalize("NFC", listed) + "?)")
