"""The int and float filters fail a render on a value they cannot read, unless given a default."""

from __future__ import annotations

import io

import pytest

from mailmatrix.core.recipients import validate_recipients
from mailmatrix.core.templates import load_catalog
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
        ("{{ Gehalt | int }}", "42.5", "42"),
        ("{{ Gehalt | float }}", "42.5", "42.5"),
        ('{{ Gehalt | replace(".", "") | int(0) }}', "56.000 €", "0"),
        ("{{ Gehalt | float(default=1.5) }}", "n/a", "1.5"),
        ("{{ Gehalt | int(0, 16) }}", "0x1A", "26"),
        ("{{ Gehalt | float }}", "1.5", "1.5"),
        ("{{ Gehalt | int }}", "68000", "68000"),
        ("{{ Gehalt | float }}", "0.500", "0.5"),
        ("{{ Gehalt | int(0) }}", "56.000", "56"),
        ('{{ Gehalt | replace(",", "") | int }}', "1,234,567", "1234567"),
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
            " (from column Gehalt: '56.000') groups thousands (56000) or marks decimals (Jinja"
            " would print 56): make the template turn the value into digits first (e.g."
            ' | replace(".", "") | int); a default, | int(0), would print Jinja\'s reading,'
            " 56",
        ),
        (
            "{{ Gehalt | float }}",
            "1.500",
            "offer/body.txt: render: the float filter cannot tell whether the \".\" in '1.500'"
            " (from column Gehalt: '1.500') groups thousands (1500) or marks decimals (Jinja"
            " would print 1.5)",
        ),
        (
            "{{ Gehalt | int }}",
            " 1.234.567",
            'offer/body.txt: render: the int filter cannot tell whether the "." in'
            " ' 1.234.567' (from column Gehalt: ' 1.234.567') groups thousands (1234567)",
        ),
        (
            "{{ Gehalt | int }}",
            "1,234",
            "offer/body.txt: render: the int filter cannot tell whether the \",\" in '1,234'"
            " (from column Gehalt: '1,234') groups thousands (1234) or marks decimals (Jinja"
            " would print 0): make the template turn the value into digits first (e.g."
            ' | replace(",", "") | int)',
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
        "float-thousands",
        "millions",
        "english-thousands",
        "nan",
        "-inf",
        "inf",
    ],
)
def test_a_value_whose_reading_is_ambiguous_or_no_number_fails_the_render(body, salary, said):
    with pytest.raises(TemplateError) as caught:
        catalog_of(body).render("offer", {"Gehalt": salary})
    assert caught.value.message.startswith(said)
