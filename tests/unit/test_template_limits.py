"""Templates that would make huge values: nothing is made while they compile, and `*` and
`**` refuse results no message could carry when a row renders."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.core.templates import load_catalog
from mailmatrix.errors import TemplateError
from tests.memory import TracedPeak

ROW = {"Name": "Amy", "Email": "amy@example.com"}


def _catalog(body: str):
    return load_catalog({"subject.txt": "Hi {{ Name }}", "body.txt": body})


@pytest.mark.parametrize(
    "body",
    [
        "{{ 'x' * 50000000 }}",
        "{{ 'x'|center(50000000) }}",
        "{% set big = 'x' * 50000000 %}{% if big %}y{% endif %}",
        "{{ '%050000000d' % 1 }}",
    ],
    ids=["repeat", "filter", "set", "format"],
)
def test_checking_a_template_makes_none_of_its_values(body):
    # GIVEN a template whose constant expression makes a value of 50 MB
    catalog = _catalog(body)

    # WHEN it is compiled and its columns are checked (validate's first step)
    with TracedPeak() as peak:
        problems = catalog.check_columns(["Email", "Name"])

    # THEN it compiles without making the value (Jinja folded it into the compiled code,
    # outside the render's time limit: 36 s and 1.5 GB for 300 MB)
    assert problems == []
    assert peak.bytes < 10_000_000


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("{{ 'x' * 100000000 }}", "repeating a value 100,000,000 times would make 100,000,000"),
        ("{{ 50000000 * ['x'] }}", "repeating a value 50,000,000 times"),
        ("{{ 10 ** 10000000 }}", "10 ** 10000000 would be a number of about 30,000,000 bits"),
    ],
    ids=["text", "list", "power"],
)
def test_a_row_whose_template_makes_a_huge_value_fails_without_making_it(body, said):
    catalog = _catalog(body)

    with TracedPeak() as peak, pytest.raises(TemplateError) as raised:
        catalog.render("default", ROW)

    assert raised.value.message.startswith("body.txt: render: refused by the sandbox: ")
    assert said in raised.value.message
    assert peak.bytes < 10_000_000


def test_small_products_and_powers_render_as_before():
    catalog = _catalog("{{ 'ab' * 3 }} {{ 2 * ['x'] }} {{ 3 * 4 }} {{ 2.5 * 2 }} {{ 2 ** 10 }}")

    assert catalog.render("default", ROW).text == "ababab ['x', 'x'] 12 5.0 1024\n"


def test_validate_rejects_the_row_of_a_template_that_repeats_a_text_beyond_any_message(
    tmp_path,
):
    # GIVEN a one-row file and a body that repeats a text 50 million times
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hi {{ Name }}")
    (folder / "body.txt").write_text("{{ 'x' * 50000000 }}")
    letters = tmp_path / "x.csv"
    letters.write_text("Email,Name\na@example.com,A\n")

    # WHEN it is validated
    options = ["--templates", str(folder), "--sender", "HR <hr@example.com>", "--json"]
    with TracedPeak() as peak:
        result = CliRunner().invoke(cli, ["validate", str(letters), *options])

    # THEN the row is rejected for it (it said "All good", after 36 s and 1.5 GB for 300
    # million), and the text was never made
    report = json.loads(result.output)
    assert (result.exit_code, report["valid"]) == (3, 0), result.output
    assert "repeating a value 50,000,000 times" in report["rejected"][0]["reason"]
    assert peak.bytes < 50_000_000
