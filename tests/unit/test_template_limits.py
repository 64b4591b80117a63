"""Templates that would make huge values: nothing is made while they compile, and operators,
filters, str methods and formats refuse results no message could carry when a row renders,
before making them (one C call the render's time limit could not stop)."""

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


# Each makes 60 MB to 2 GB in one call, or by joining what a loop kept: the sandbox refuses
# it first, so a render's peak stays far below what it would make.
_BIG = "{% set big = 'x' * 30000000 %}"
_KEPT = _BIG + "{% set kept = [] %}{% for i in range(10) %}{% if kept.append(big) %}{% endif %}"
_KEPT += "{% endfor %}"


_HUGE = [
    ("{{ Name|center(2000000000) }}", "center would make 2,000,000,000 characters"),
    ("{{ '%0300000000d' % 1 }}", "formatting with % would make 300,000,012"),
    ("{{ '%*d' % (300000000, 1) }}", "formatting with % would make 300,000,003"),
    ("{{ '%.300000000f' % 1.5 }}", "formatting with % would make 300,000,012"),
    ("{{ '%(a(b))300000000s' % {'a(b)': 1} }}", "formatting with % would make 300,000,017"),
    (
        _BIG + "{{ ('%s' * 10) % (big, big, big, big, big, big, big, big, big, big) }}",
        "formatting with % would make 300,000,020",
    ),
    ("{{ '%0300000000d'|format(1) }}", "formatting with % would make 300,000,012"),
    ("{{ Name|indent(width=300000000) }}", "indent would make 600,000,003"),
    ("{{ 'a\nb'|indent('x' * 30000000, first=true) }}", "indent would make 90,000,003"),
    ("{{ ('a ' * 1000000)|wordwrap(2, wrapstring='x' * 300) }}", "wordwrap would make"),
    ("{{ '{:>999999999}'.format(1) }}", "the format '>999999999' would make 999,999,999"),
    ("{{ '{:>{}}'.format(1, 999999999) }}", "the format '>999999999' would make"),
    ("{{ '{x:>999999999}'.format_map({'x': 1}) }}", "the format '>999999999' would make"),
    (_BIG + "{{ ('{0}' * 10).format(big) }}", "str.format() would make 60,000,000"),
    ("{{ Name.center(2000000000) }}", "center would make 2,000,000,000"),
    ("{{ Name.ljust(2000000000) }}", "ljust would make 2,000,000,000"),
    ("{{ Name.zfill(2000000000) }}", "zfill would make 2,000,000,000"),
    ("{{ 'a\tb'.expandtabs(2000000000) }}", "expandtabs would make 2,000,000,003"),
    ("{{ ('x' * 3000000).replace('', 'y' * 100) }}", "replace would make 303,000,100"),
    ("{{ ('x' * 3000000)|replace('x', 'y' * 100) }}", "replace would make 300,000,000"),
    ("{{ ('x' * 3000000).translate({120: 'y' * 100}) }}", "translate would make 300,000,000"),
    (_BIG + "{{ [big] * 10 }}", "repeating a list of texts 10 times would make 300,000,000"),
    (_KEPT + "{{ kept|join }}", "joining 10 values would make 300,000,000"),
    (_KEPT + "{{ ''.join(kept) }}", "joining 10 values would make 300,000,000"),
    (_KEPT + "{{ kept|tojson }}", "tojson would make 60,000,00"),
    ("{{ [1, 2]|tojson(indent=300000000) }}", "tojson: an indent of 300000000 is longer"),
    (_BIG + "{{ big ~ big }}", "joining values with ~ would make 60,000,000"),
    (_BIG + "{{ big + big }}", "adding two values would make 60,000,000"),
    (
        "{% for i in range(10) %}{{ 'x' * 30000000 }}{% endfor %}",
        "the template's output would make 60,000,000",
    ),
    (
        "{% macro m() %}{% for i in range(10) %}{{ 'x' * 30000000 }}{% endfor %}"
        "{% endmacro %}{% set made = m() %}",
        "the output of a macro or block would make 60,000,000",
    ),
]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("{{ 'x' * 100000000 }}", "repeating a value 100,000,000 times would make 100,000,000"),
        ("{{ 50000000 * ['x'] }}", "repeating a value 50,000,000 times"),
        ("{{ 10 ** 10000000 }}", "10 ** 10000000 would be a number of about 30,000,000 bits"),
        *_HUGE,
    ],
    ids=lambda value: value[:40] if value.startswith("{") else "",
)
def test_a_row_whose_template_makes_a_huge_value_fails_without_making_it(body, said):
    # GIVEN a body that makes a huge value in one step (or keeps making long ones)
    catalog = _catalog(body)

    # WHEN a row renders
    with TracedPeak() as peak, pytest.raises(TemplateError) as raised:
        catalog.render("default", ROW)

    # THEN the sandbox refuses it, having made no more than the template's own values
    assert raised.value.message.startswith("body.txt: render: refused by the sandbox: ")
    assert said in raised.value.message
    assert peak.bytes < (200_000_000 if "30000000" in body else 10_000_000)


def test_small_products_and_powers_render_as_before():
    catalog = _catalog("{{ 'ab' * 3 }} {{ 2 * ['x'] }} {{ 3 * 4 }} {{ 2.5 * 2 }} {{ 2 ** 10 }}")

    assert catalog.render("default", ROW).text == "ababab ['x', 'x'] 12 5.0 1024\n"


def test_ordinary_widths_formats_and_joins_render_as_before():
    catalog = _catalog(
        "[{{ Name|center(9) }}] {{ '%05d' % 42 }} {{ '%-4s|%.1f' % (Name, 2.25) }}"
        " {{ '%(n)s' % {'n': Name} }} {{ '%d%%'|format(5) }} {{ '{:>5}'.format(Name) }}"
        " {{ '{n:*^7}'.format_map({'n': Name}) }} {{ Name.rjust(5, '.') }}"
        " {{ 'a-b'.replace('-', '--') }} {{ [1, 2]|join(', ') }} {{ '+'.join(['a', 'b']) }}"
        " {{ Name ~ '!' }} {{ Name + '?' }} {{ 1 + 2 }} {{ 7 % 3 }}\n"
        "{{ 'one\ntwo'|indent(4) }}\n{{ 'aa bb cc'|wordwrap(5) }}\n{{ {'a': [1]}|tojson(2) }}"
        "{% macro m() %}<{{ Name }}>{% endmacro %} {{ m() }}"
    )

    assert catalog.render("default", ROW).text == (
        "[   Amy   ] 00042 Amy |2.2 Amy 5%   Amy **Amy** ..Amy a--b 1, 2 a+b Amy! Amy? 3 1\n"
        "one\n    two\naa bb\ncc\n"
        '{\n  "a": [\n    1\n  ]\n} <Amy>\n'
    )


def test_html_bodies_format_and_join_escaped_values_as_before():
    catalog = load_catalog(
        {
            "subject.txt": "Hi {{ Name }}",
            "body.html": "<p>{{ '%s & %s' % (Name, '<b>') }} {{ [Name, '<i>']|join(' ') }}"
            " {{ '{}'.format('<u>') }} {{ Name ~ '<s>' }}</p>",
        }
    )

    assert catalog.render("default", ROW).html == (
        "<p>Amy &amp; &lt;b&gt; Amy &lt;i&gt; &lt;u&gt; Amy&lt;s&gt;</p>"
    )


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
