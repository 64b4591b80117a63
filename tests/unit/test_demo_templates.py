"""Which templates folder holds the demo company's letters (refused over SMTP or SES to real
people): the one whose manifest says ``demo: true``, and the bundled one while its sender is
still the demo's."""

from __future__ import annotations

import shutil

import pytest

from mailmatrix import local
from mailmatrix.core.templates import load_catalog, marks_demo
from mailmatrix.errors import TemplateError

DEMO_SENDER = 'sender: "Acme Talent <talent@example.com>"'
MARKER = "\ndemo: true\n"


def test_the_bundled_folder_is_the_demo_until_its_marker_and_sender_are_gone(tmp_path, monkeypatch):
    # GIVEN the bundled folder (a copy standing in for it)
    bundled = tmp_path / "templates"
    shutil.copytree(local.DEFAULT_TEMPLATES, bundled)
    monkeypatch.setattr(local, "DEFAULT_TEMPLATES", bundled)
    manifest = bundled / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert DEMO_SENDER in text and MARKER in text

    # THEN as shipped it is the demo, and so is a copy of it, edited or not, while its
    # manifest keeps the marker; deleting the line makes the copy one's own
    assert local.is_demo(bundled)
    other = tmp_path / "mine"
    shutil.copytree(bundled, other)
    assert local.is_demo(other)
    subject = other / "offer" / "subject.txt"
    subject.write_text(subject.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert local.is_demo(other)
    (other / "manifest.yaml").write_text(text.replace(MARKER, "\n"), encoding="utf-8")
    assert not local.is_demo(other)

    # WHEN the bundled folder's sender is made one's own in place, its marker kept
    mine = text.replace(DEMO_SENDER, 'sender: "HR <hr@acme.io>"')
    manifest.write_text(mine, encoding="utf-8")
    # THEN it is still the demo; without the marker, it is not
    assert local.is_demo(bundled)
    manifest.write_text(mine.replace(MARKER, "\n"), encoding="utf-8")
    assert not local.is_demo(bundled)

    # AND without the marker, the bundled folder whose sender is still the demo's, or has
    # none, or whose manifest does not read, keeps the guard on
    manifest.write_text(text.replace(MARKER, "\n"), encoding="utf-8")
    assert local.is_demo(bundled)
    manifest.write_text(text.replace(MARKER, "\n").replace(DEMO_SENDER, ""), encoding="utf-8")
    assert local.is_demo(bundled)
    manifest.write_bytes(b"\xff\xfe not yaml")
    assert local.is_demo(bundled)


def test_the_catalog_reads_the_demo_marker():
    # GIVEN the bundled templates THEN their catalog is the demo's; without the line, not
    files = {
        path.relative_to(local.DEFAULT_TEMPLATES).as_posix(): path.read_text(encoding="utf-8")
        for path in local.DEFAULT_TEMPLATES.rglob("*")
        if path.is_file() and path.suffix != ".md"
    }
    assert load_catalog(files).demo
    assert marks_demo(files["manifest.yaml"])
    own = {**files, "manifest.yaml": files["manifest.yaml"].replace(MARKER, "\n")}
    assert not load_catalog(own).demo
    assert not marks_demo(own["manifest.yaml"])
    off = {**files, "manifest.yaml": files["manifest.yaml"].replace(MARKER, "\ndemo: false\n")}
    assert not load_catalog(off).demo

    # AND a marker that is neither true nor false is refused, saying what it may be
    odd = {**files, "manifest.yaml": files["manifest.yaml"].replace(MARKER, "\ndemo: maybe\n")}
    with pytest.raises(TemplateError, match=r"'demo' must be true .* or false"):
        load_catalog(odd)
    assert not marks_demo(odd["manifest.yaml"])


@pytest.mark.parametrize(
    ("context", "found"),
    [
        ({"contact_email": "talent@example.com"}, ("contact_email", "talent@example.com")),
        (
            {"footer": {"links": ["https://globex.io", "Write to <hr@jobs.example.org>."]}},
            ("footer.links[1]", "hr@jobs.example.org"),
        ),
        ({"help": "mailto:desk@it.test?subject=Offer"}, ("help", "desk@it.test")),
        ({"company": "Globex", "contact_email": "hr@globex.io", "year": 2027}, None),
        ({"contact_email": "hr@example.community"}, None),
        ({}, None),
    ],
    ids=["plain", "nested", "in-text", "own", "lookalike", "none"],
)
def test_a_constant_at_a_domain_reserved_for_examples_is_a_placeholder(context, found):
    from mailmatrix.core.send import placeholder_constant

    assert placeholder_constant(context) == found


def test_a_constant_that_holds_itself_is_walked_once():
    import yaml

    from mailmatrix.core.send import placeholder_constant

    # GIVEN constants whose YAML alias refers to its own parent
    context = yaml.safe_load("links: &own [hr@globex.io, *own, {help: desk@acme.invalid}]")

    # THEN the walk ends, finding the placeholder under it
    assert placeholder_constant(context) == ("links[2].help", "desk@acme.invalid")
