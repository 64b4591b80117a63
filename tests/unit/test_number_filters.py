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
    ],
    ids=["readable", "decimal", "float", "default", "float-default", "base"],
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


def test_validate_stops_the_file_when_the_first_rows_cannot_read_their_salary():
    # GIVEN a set printing the salary through int, and German amounts in every row
    rows = "".join(f"p{i}@example.com;Person {i};Offer;5{i}.000 €\r\n" for i in range(4))
    data = ("Email;Name;Status;Gehalt\r\n" + rows).encode()

    # WHEN the file is validated
    with pytest.raises(TemplateError) as caught:
        validate_recipients(
            io.BytesIO(data),
            source="incoming/test.csv",
            catalog=catalog_of('{{ Gehalt | replace(".", "") | int }} EUR'),
            attachments=index_of(),
            emit=lambda row: None,
        )

    # THEN nothing is sent: the set's trial renders failed, the value and column named
    assert "the int filter cannot read '50000 €' (from column Gehalt" in caught.value.message
    assert "every row of set offer tried failed" in caught.value.message
