"""The int and float filters fail a render on a value they cannot read, unless given a default."""

from __future__ import annotations

import io

import pytest

from mailmatrix.core.recipients import validate_recipients
from mailmatrix.core.templates import digits_recipe, load_catalog
from mailmatrix.errors import TemplateError
from tests.unit.test_recipients import index_of

MANIFEST = "sets:\n  offer:\n    when: [Offer]\n    attachment: none\n"


def catalog_of(body: str):
    return load_catalog(
        {"manifest.yaml": MANIFEST, "offer/subject.txt": "Angebot", "offer/body.txt": body}
    )


@pytest.mark.parametrize(
    ("body", "salary", "printed"),
    [
        ('{{ Gehalt | replace(".", "") | int }}', "56.000", "56000"),
        ("{{ Gehalt | int }}", "42.0", "42"),
        ("{{ Gehalt | float }}", "42.5", "42.5"),
        ('{{ Gehalt | replace(".", "") | int(0) }}', "56.000 €", "0"),
        ("{{ Gehalt | float(default=1.5) }}", "n/a", "1.5"),
        ("{{ Gehalt | int(0, 16) }}", "0x1A", "26"),
        ("{{ Gehalt | float }}", "1.5", "1.5"),
        ("{{ Gehalt | int }}", "68000", "68000"),
        ("{{ Gehalt | float }}", "0.500", "0.5"),
        ("{{ Gehalt | int(0) }}", "56.000", "56"),
        ('{{ Gehalt | replace(",", "") | int }}', "1,234,567", "1234567"),
        ('{{ Gehalt | float(decimal=".") }}', "3.125", "3.125"),
        ('{{ Gehalt | float(decimal=".") }}', "1.500", "1.5"),
        ("{{ Gehalt | int(0) }}", "85000.99", "85000"),
        ('{{ Gehalt | replace("\\u00a0", "") | int }}', "85\u00a0000", "85000"),
    ],
    ids=[
        "readable",
        "decimal",
        "float",
        "default",
        "float-default",
        "base",
        "one-decimal",
        "digits",
        "leading-zero",
        "default-keeps-jinjas-reading",
        "digits-first",
        "float-reads-one-dot-as-python-does",
        "float-reads-a-decimal-with-three-digits",
        "int-default-drops-decimals-as-jinja-does",
        "no-break-space-taken-out",
    ],
)
def test_values_read_or_with_a_default_render_as_jinja_renders_them(body, salary, printed):
    assert catalog_of(body).render("offer", {"Gehalt": salary}).text == printed + "\n"


@pytest.mark.parametrize(
    ("body", "salary", "said"),
    [
        (
            '{{ Gehalt | replace(".", "") | int }}',
            "56.000 €",
            "offer/body.txt: render: the int filter cannot read '56000 €' (from column Gehalt:"
            " '56.000 €') as a number (Jinja would print 0)",
        ),
        (
            "{{ Gehalt | float }}",
            "56,5",
            "offer/body.txt: render: the float filter cannot read '56,5' (from column Gehalt:"
            " '56,5') as a number (Jinja would print 0)",
        ),
    ],
    ids=["int", "float"],
)
def test_a_value_the_filter_cannot_read_fails_the_render_naming_value_filter_and_column(
    body, salary, said
):
    with pytest.raises(TemplateError) as caught:
        catalog_of(body).render("offer", {"Gehalt": salary})
    assert caught.value.message.startswith(said + ": ")
    assert "| int(0)" in caught.value.message or "| float(0)" in caught.value.message


@pytest.mark.parametrize(
    ("salary", "body", "said"),
    [
        (
            "5{}.000 €",
            '{{ Gehalt | replace(".", "") | int }} EUR',
            "the int filter cannot read '50000 €' (from column Gehalt",
        ),
        (
            "5{}.000",
            "Annual salary: {{ Gehalt | int }} EUR",
            "the int filter cannot tell whether the \".\" in '50.000' (from column Gehalt",
        ),
    ],
    ids=["unreadable", "grouped-thousands"],
)
def test_validate_stops_the_file_when_the_first_rows_cannot_read_their_salary(salary, body, said):
    # GIVEN a set printing the salary through int, and German amounts in every row
    rows = "".join(f"p{i}@example.com;Person {i};Offer;{salary.format(i)}\r\n" for i in range(4))
    data = ("Email;Name;Status;Gehalt\r\n" + rows).encode()

    # WHEN the file is validated
    with pytest.raises(TemplateError) as caught:
        validate_recipients(
            io.BytesIO(data),
            source="incoming/test.csv",
            catalog=catalog_of(body),
            attachments=index_of(),
            emit=lambda row: None,
        )

    # THEN nothing is sent: the set's trial renders failed, the value and column named
    assert said in caught.value.message
    assert "every row of set offer tried failed" in caught.value.message


@pytest.mark.parametrize(
    ("body", "salary", "said"),
    [
        (
            "Annual salary: {{ Gehalt | int }} EUR",
            "56.000",
            "offer/body.txt: render: the int filter cannot tell whether the \".\" in '56.000'"
            " (from column Gehalt: '56.000') groups thousands (56000) or marks decimals (56.0):"
            " write the column in the CSV as digits with a decimal point at most (a spreadsheet"
            " does when its cells are formatted as numbers without a thousands separator) (where"
            ' the column\'s "." are all decimal points, | int(decimal=".") reads it so); a'
            " default, | int(0), would print Jinja's reading, 56",
        ),
        (
            "{{ Gehalt | int }}",
            "1.500",
            "offer/body.txt: render: the int filter cannot tell whether the \".\" in '1.500'"
            " (from column Gehalt: '1.500') groups thousands (1500) or marks decimals (1.5)",
        ),
        (
            "{{ Gehalt | int }}",
            " 1.234.567",
            "offer/body.txt: render: the int filter cannot read ' 1.234.567' (from column"
            " Gehalt: ' 1.234.567'), its \".\" grouping thousands (Jinja would print 0): make"
            ' the template take them out first, for this value | replace(".", "") | trim | int,'
            " or write it in the CSV as digits only",
        ),
        (
            "{{ Gehalt | int }}",
            "1,234,567",
            "offer/body.txt: render: the int filter cannot read '1,234,567' (from column"
            " Gehalt: '1,234,567'), its \",\" grouping thousands (Jinja would print 0): make"
            ' the template take them out first, for this value | replace(",", "") | int,',
        ),
        (
            "{{ Gehalt | int }}",
            "1,234",
            "offer/body.txt: render: the int filter cannot tell whether the \",\" in '1,234'"
            " (from column Gehalt: '1,234') groups thousands (1234) or marks decimals (1.234):"
            " write the column in the CSV as digits with a decimal point at most",
        ),
        (
            "{{ Gehalt | float }}",
            "1,234",
            "offer/body.txt: render: the float filter cannot tell whether the \",\" in '1,234'"
            " (from column Gehalt: '1,234') groups thousands (1234) or marks decimals (1.234)",
        ),
        (
            "{{ Gehalt | int }}",
            "85000.99",
            "offer/body.txt: render: the int filter would drop the decimals of '85000.99' (from"
            " column Gehalt: '85000.99') and print 85000: print the value with | float, or"
            " round it first (| float | round | int), or write it in the CSV as a whole number"
            " (a default, | int(0), would print 85000)",
        ),
        (
            "{{ Gehalt | int }}",
            "0.500",
            "offer/body.txt: render: the int filter would drop the decimals of '0.500'",
        ),
        (
            "{{ Gehalt | int }}",
            "85\u00a0000",
            "offer/body.txt: render: the int filter cannot read '85\\xa0000' (from column"
            " Gehalt: '85\\xa0000') as a number (Jinja would print 0): make the template turn"
            ' the value into digits first, for this value | replace("\\u00a0", "") | int,',
        ),
        (
            "{{ Gehalt | int }}",
            "85\u202f000",
            "offer/body.txt: render: the int filter cannot read '85\\u202f000' (from column"
            " Gehalt: '85\\u202f000') as a number (Jinja would print 0): make the template turn"
            ' the value into digits first, for this value | replace("\\u202f", "") | int,',
        ),
        (
            "{{ Gehalt | int }}",
            "42,5",
            "offer/body.txt: render: the int filter cannot read '42,5' (from column Gehalt:"
            " '42,5') as a number (Jinja would print 0): make the template turn the value into"
            ' digits first, for this value | replace(",", ".") | float | round | int,',
        ),
        (
            "{{ Gehalt | float }}",
            "NaN",
            "offer/body.txt: render: the float filter reads 'NaN' (from column Gehalt: 'NaN')"
            " as no number (Jinja would print nan): correct the value in the CSV",
        ),
        (
            "{{ Gehalt | float }}",
            "-Infinity",
            "offer/body.txt: render: the float filter reads '-Infinity' (from column Gehalt:"
            " '-Infinity') as no number (Jinja would print -inf)",
        ),
        (
            "{{ Gehalt | float }}",
            "inf",
            "offer/body.txt: render: the float filter reads 'inf' (from column Gehalt: 'inf')"
            " as no number (Jinja would print inf)",
        ),
    ],
    ids=[
        "german-thousands",
        "int-thousands-or-decimals",
        "millions",
        "english-millions-no-decimals",
        "english-thousands",
        "float-comma-thousands-or-decimals",
        "int-drops-decimals",
        "int-drops-decimals-below-one",
        "no-break-space-thousands",
        "narrow-no-break-space-thousands",
        "decimal-comma-for-int-rounds",
        "nan",
        "-inf",
        "inf",
    ],
)
def test_a_value_whose_reading_is_ambiguous_or_no_number_fails_the_render(body, salary, said):
    with pytest.raises(TemplateError) as caught:
        catalog_of(body).render("offer", {"Gehalt": salary})
    assert caught.value.message.startswith(said)


@pytest.mark.parametrize(
    ("value", "filter_name", "recipe"),
    [
        ("56.000", "int", None),
        ("1,234 kg", "float", None),
        ("1,234", "float", None),
        ("1.500", "float", None),
        ("€1.500", "int", '| replace("€", "") | replace(".", "") | int'),
        ("€1.234.567", "int", '| replace("€", "") | replace(".", "") | int'),
        (
            "1.234,50 €",
            "float",
            '| replace("€", "") | replace(".", "") | replace(",", ".") | trim | float',
        ),
    ],
    ids=[
        "int-dot",
        "not-a-number",
        "float-comma",
        "float-dot-decimal",
        "money-cents-have-two-digits",
        "millions",
        "german-decimals",
    ],
)
def test_the_hint_never_takes_out_a_separator_that_may_mark_decimals(value, filter_name, recipe):
    assert digits_recipe(value, filter_name) == recipe


def test_a_rate_column_with_three_decimals_validates_and_prints_each_value_as_written():
    # GIVEN rates with one, two and three decimals, printed through float, the template saying
    # the column's "." is a decimal point
    rates = ["2.5", "1.75", "3.125", "4.0"]
    rows = "".join(f"p{i}@example.com;Person {i};Offer;{rate}\r\n" for i, rate in enumerate(rates))
    data = ("Email;Name;Status;Gehalt\r\n" + rows).encode()
    catalog = catalog_of('{{ Gehalt | float(decimal=".") }}')

    # WHEN the file is validated
    report = validate_recipients(
        io.BytesIO(data),
        source="incoming/test.csv",
        catalog=catalog,
        attachments=index_of(),
        emit=lambda row: None,
    )

    # THEN no row is rejected, and each prints its own rate
    assert report.rejected == []
    printed = [catalog.render("offer", {"Gehalt": rate}).text for rate in rates]
    assert printed == ["2.5\n", "1.75\n", "3.125\n", "4.0\n"]


@pytest.mark.parametrize("value", ["56.000", "1.500", "120.000"])
def test_float_refuses_a_german_amount_it_would_print_as_a_small_decimal(value):
    # GIVEN a salary written the German way, read with float (as a template formatting cents)
    # WHEN it renders
    with pytest.raises(TemplateError) as caught:
        catalog_of("{{ Gehalt | float }}").render("offer", {"Gehalt": value})

    # THEN it is refused, naming the way to read a column of decimals
    assert "groups thousands" in caught.value.message
    assert '| float(decimal=".") reads it so' in caught.value.message


def test_decimal_point_still_refuses_digits_grouped_twice_and_only_knows_the_dot():
    catalog = catalog_of('{{ Gehalt | float(decimal=".") }}')
    with pytest.raises(TemplateError) as caught:
        catalog.render("offer", {"Gehalt": "1.234.567"})
    assert "grouping thousands" in caught.value.message
    with pytest.raises(TemplateError):
        catalog_of('{{ Gehalt | float(decimal=",") }}').render("offer", {"Gehalt": "3,5"})


def test_validation_reads_every_row_through_a_filter_given_the_decimal_point():
    # GIVEN rates read with float(decimal="."), one row's rate not a number
    rows = "".join(
        f"p{i}@example.com;Person {i};Offer;{rate}\r\n"
        for i, rate in enumerate(["2.5", "3.125", "1.75", "n/a", "4.0"])
    )
    data = ("Email;Name;Status;Gehalt\r\n" + rows).encode()

    # WHEN the file is validated
    report = validate_recipients(
        io.BytesIO(data),
        source="incoming/test.csv",
        catalog=catalog_of('{{ Gehalt | float(decimal=".") }}'),
        attachments=index_of(),
        emit=lambda row: None,
    )

    # THEN only the row whose value is no number is rejected
    assert [item["row"] for item in report.rejected] == [5]
