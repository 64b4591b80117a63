"""Validation forecasts what the run does: numbers read by int and float on every row, names
templates set themselves, sets no row picks, files a set does not attach, near-miss names."""

from __future__ import annotations

from typing import Any

import pytest

from mailmatrix.core.recipients import IntakeReport
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


def validate(text: str, templates: Catalog, *files: str) -> tuple[IntakeReport, list[dict]]:
    """Validate the CSV ``text`` against ``templates``, the attachments holding ``files``."""
    report: Any
    report, rows = run(text, catalog=templates, index=index_of(*(files or ("x.pdf",))))
    return report, rows


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
