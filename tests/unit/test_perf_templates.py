"""Inlining CSS once per skeleton gives the HTML that inlining every row gives, byte for byte.

Catalog.render inlines a row's HTML skeleton (its printed values replaced by slots) once and
fills in each row's values; these tests hold it to the per-row path (render, then inline) for
the bundled templates and for templates built to break it, and check where each path is taken.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailmatrix.core.templates as templates
from mailmatrix.core.templates import SKELETON_CACHE_SIZE, Catalog, load_catalog
from mailmatrix.errors import TemplateError

REPO = Path(__file__).resolve().parents[2]
STYLE = "<style>p { color: #111 } td { padding: 2px } a { color: #22e } .k { margin: 0 }</style>"
PAGE = (
    '<!DOCTYPE html><html lang="en"><head><title>T</title>{style}</head><body>{body}</body></html>'
)
BASE = (
    f"<!DOCTYPE html><html><head>{STYLE}</head><body>"
    "{% block content %}<p>{{ y }}</p>{% endblock %}</body></html>"
)

# Templates where every row with plain values is filled in (no inlining after the first).
FILLED = {
    "text-and-links": (
        '<p class="k">Dear {{ x }},</p><p>{{ y }} &middot; <a href="mailto:{{ u }}" '
        'title="{{ y }}">{{ u }}</a></p><img src="https://example.com/{{ x }}.png" alt="{{ x }}">'
    ),
    "textarea": "<textarea>{{ x }}</textarea><p>{{ y }}</p>",
    "text-directly-in-a-table": "<table>{{ x }}<tr><td>{{ y }}</td></tr>{{ u }}</table>",
    "pre": "<pre>{{ x }}\n{{ y }}</pre>",
    "after-a-script": '<script type="application/ld+json">{}</script>{{ x }}<p>{{ y }}</p>',
    "if-changes-structure": (
        "{% if y == 'Bo' %}<table><tr><td>{{ x }}</td></tr></table>"
        "{% else %}<div><p>{{ x }}</p></div>{% endif %}"
    ),
    "for-loop": "<ul>{% for v in (x, y, u) %}<li>{{ loop.index }} {{ v }}</li>{% endfor %}</ul>",
    "safe-constant": "<p>{{ '<b>bold</b>'|safe }} {{ x }}</p><p>{{ y|e }}</p>",
    "defaults-and-numbers": "<p>{{ x or 'colleague' }} {{ 3 * 7 }} {{ '' }}{{ y }}</p>",
    "autoescape-false": "{% autoescape false %}<p>{{ '<i>' }}</p>{% endautoescape %}<p>{{ x }}</p>",
    "empty-selector": "<p>{{ x or '' }}</p><p>{{ y }}</p><p></p>",
    "formatting-elements": "<b>{{ x }}</b><em>{{ y }}</em><b><a href='{{ u }}'>{{ u }}</a></b>",
    "text-in-head": None,  # built in page(): a value printed before the <style> in <head>
    "super": None,  # layout.html with {{ super() }}
    "include": None,  # an included .html part
    "import-without-context": None,  # a macro imported without context, printing a constant
}
# Templates where no row is filled in: each is inlined as it is rendered.
INLINED = {
    "class": '<p class="{{ x }}">a</p>',
    "id": '<p id="{{ x }}">a</p>',
    "style-attribute": '<p style="color: {{ x }}">a</p>',
    "in-style": "<style>p { color: {{ x }} }</style><p>a</p>",
    "in-script": '<script>var a = "{{ x }}";</script><p>a</p>',
    "in-comment": "<!-- {{ x }} --><p>a</p>",
    "attribute-selector": '<a title="{{ x }}">a</a>',
    "unquoted-attribute": "<a title={{ x }}>a</a>",
    "data-attribute": '<p data-name="{{ x }}">a</p>',
    "tag-name": "<p><{{ x }}>a</p>",
    "end-tag-in-title": "<title></{{ x }}</title><p>a</p>",
    "character-reference": "<p>&am{{ x }}</p>",
    "macro-filtered": "{% macro m(v) %}<b>{{ v }}</b>{% endmacro %}<p>{{ m(x)|upper }}</p>",
    "filter-block": "{% filter upper %}<p>{{ x }}</p>{% endfilter %}",
    "set-block": "{% set s %}{{ x }}{% endset %}<p>{{ s|length }} {{ s }}</p>",
    "self": "<p>{% block t %}{{ x }}{% endblock %}</p><p>{{ self.t()|upper }}</p>",
    "super-filtered": None,  # {{ super()|upper }}
    "text-layout": None,  # an .html body extending a layout compiled without autoescape
    "misnested-formatting": '<b title="{{ x }}"><p>t</b>a</p>',
    # With x == "z" the fourth <b> pushes the first out of the parser's list, so one fewer is
    # reopened after </p>: a row's value changes the tree though its slot appears once.
    "noahs-ark": '<p><b title="z"><b title="z"><b title="z"><b title="{{ x }}">t</b></p>after',
    "recursive-loop": (
        "{% for v in [[x]] recursive %}{% if v is string %}<p>{{ v }}</p>"
        "{% else %}{{ loop(v)|upper }}{% endif %}{% endfor %}"
    ),
}
# Templates whose skeleton holds a row's value: one skeleton per value.
PER_VALUE = {
    "safe-value": "<p>{{ x|safe }}</p>",
    "imported-macro-filtered": None,  # a macro imported without context prints x, then |upper
}
STYLES = {
    "attribute-selector": STYLE.replace("a {", 'a[title="Amy 1"] {'),
    "empty-selector": STYLE.replace("p {", "p:empty {"),
    "id": STYLE.replace(".k {", "#Amy {"),
}


def page(name: str) -> dict[str, str]:
    """The templates folder of the case ``name``: subject.txt, body.html and any layout."""
    body = FILLED.get(name) or INLINED.get(name) or PER_VALUE.get(name)
    files = {"subject.txt": "S", "body.html": ""}
    if name == "text-in-head":
        files["body.html"] = f"<html><head>{{{{ x }}}}{STYLE}</head><body><p>{{{{ y }}}}</p></body>"
    elif name in ("super", "super-filtered"):
        block = "{{ super() }}" if name == "super" else "{{ super()|upper }}"
        files["layout.html"] = BASE
        files["body.html"] = (
            '{% extends "layout.html" %}{% block content %}<h1>{{ x }}</h1>'
            + block
            + "{% endblock %}"
        )
    elif name == "text-layout":
        files["layout.txt"] = BASE
        files["body.html"] = '{% extends "layout.txt" %}'
    elif name == "include":
        files["part.html"] = "<td>{{ x }}</td>"
        files["body.html"] = PAGE.format(
            style=STYLE, body='<table><tr>{% include "part.html" %}<td>{{ y }}</td></tr></table>'
        )
    elif name in ("import-without-context", "imported-macro-filtered"):
        files["macros.html"] = (
            "{% macro sign() %}<em>Acme &amp; Co</em>{% endmacro %}"
            "{% macro greet(n) %}<b>{{ n }}</b>{% endmacro %}"
        )
        printed = "{{ m.sign() }}" if name == "import-without-context" else "{{ m.greet(y)|upper }}"
        files["body.html"] = PAGE.format(
            style=STYLE, body='{% import "macros.html" as m %}<p>{{ x }}</p>' + printed
        )
    else:
        files["body.html"] = PAGE.format(style=STYLES.get(name, STYLE), body=body)
    return files


def bundled() -> dict[str, str]:
    root = REPO / "templates"
    files = (p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}


@functools.cache
def catalog_of(name: str) -> Catalog:
    """One catalog per case, kept across examples so skeletons are reused."""
    return load_catalog(bundled() if name == "bundled" else page(name))


def per_row(catalog: Catalog, template: str, row: dict[str, str]) -> str | tuple[str, str]:
    """The HTML as every row got it before skeletons: rendered, then inlined (or the error)."""
    return html_or_error(catalog._render_and_inline, catalog, template, row)


def rendered(catalog: Catalog, template: str, row: dict[str, str]) -> str | tuple[str, str]:
    """The HTML Catalog.render gives (or the error); its HTML step, as the subject fails first."""
    return html_or_error(catalog._render_html, catalog, template, row)


def html_or_error(render, catalog: Catalog, template: str, row: dict[str, str]):
    try:
        return render(catalog.sets[template].html or "", catalog._context(row))
    except TemplateError as exc:
        return ("error", exc.message)


class CountingInliner:
    """The real inliner, counting its calls."""

    def __init__(self, inliner) -> None:
        self.inliner = inliner
        self.calls = 0

    def inline(self, html: str) -> str:
        self.calls += 1
        return self.inliner.inline(html)


@pytest.fixture
def inliner(monkeypatch: pytest.MonkeyPatch) -> CountingInliner:
    counting = CountingInliner(templates._INLINER)
    monkeypatch.setattr(templates, "_INLINER", counting)
    return counting


def plain_row(i: int) -> dict[str, str]:
    return {
        "x": f"Amy {i}" if i % 3 else "z",
        "y": "Bo" if i % 2 else "Cy",
        "u": f"a{i}@example.com",
    }


# --- which path each template takes ----------------------------------------------------------


def test_bundled_sets_inline_once_per_skeleton_and_give_the_per_row_html(inliner):
    # GIVEN the bundled templates and 40 rows, rejections with and without a Department
    catalog = load_catalog(bundled())
    rows = [
        {
            "Name": f"Seán O'Brien-{i} <&>",
            "Status": "Offer" if i % 2 else "Rejection",
            "Position": 'Data "Platform" Engineer',
            "Department": "" if i % 4 == 0 else "R&D",
            "Start_Date": f"2027-01-{i % 28 + 1:02d}",
            "Salary": f"€{60_000 + i:,}",
        }
        for i in range(40)
    ]
    templates_of = ["offer" if row["Status"] == "Offer" else "rejection" for row in rows]

    # WHEN every row is rendered
    got = [catalog.render(t, row).html for t, row in zip(templates_of, rows, strict=True)]
    calls = inliner.calls

    # THEN the inliner ran once per skeleton (offer; rejection with and without Department)
    assert calls == 3
    assert got == [per_row(catalog, t, row) for t, row in zip(templates_of, rows, strict=True)]


def test_a_body_without_a_style_block_is_rendered_without_a_skeleton(inliner, monkeypatch):
    # GIVEN an HTML body with no <style> block, in a layout without one either
    files = {
        "subject.txt": "S",
        "layout.html": "<html><body>{% block content %}{% endblock %}</body></html>",
        "body.html": '{% extends "layout.html" %}{% block content %}<p>{{ x }}</p>{% endblock %}',
    }
    catalog = load_catalog(files)
    skeletons = []
    monkeypatch.setattr(templates, "_inline_skeleton", lambda *args: skeletons.append(args) or None)
    # WHEN rows are rendered THEN no skeleton is made, the page is the rendered one as it is
    for i in range(3):
        assert catalog.render("default", plain_row(i)).html == per_row(
            catalog, "default", plain_row(i)
        )
    assert skeletons == []
    # AND with a <style> block in the layout, skeletons are made again
    files["layout.html"] = files["layout.html"].replace("<body>", f"<head>{STYLE}</head><body>")
    load_catalog(files).render("default", plain_row(0))
    assert len(skeletons) == 1


@pytest.mark.parametrize("name", sorted(FILLED))
def test_rows_are_filled_in_where_it_is_safe(name, inliner):
    # GIVEN a template whose values all land as text or in plain attributes, its skeletons seen
    catalog = load_catalog(page(name))
    catalog.render("default", plain_row(0))
    catalog.render("default", plain_row(1))

    # WHEN more rows with plain values are rendered
    inliner.calls = 0
    got = [rendered(catalog, "default", plain_row(i)) for i in range(1, 9)]

    # THEN none of them runs the inliner, and each gives the per-row HTML
    assert inliner.calls == 0
    assert got == [per_row(catalog, "default", plain_row(i)) for i in range(1, 9)]


@pytest.mark.parametrize("name", sorted(INLINED))
def test_rows_are_inlined_one_by_one_where_filling_in_could_differ(name, inliner):
    # GIVEN a template printing a value where the parser or the inliner reads it
    catalog = load_catalog(page(name))
    catalog.render("default", plain_row(0))

    # WHEN more rows are rendered
    inliner.calls = 0
    got = [rendered(catalog, "default", plain_row(i)) for i in range(1, 9)]

    # THEN each runs the inliner, and gives the per-row HTML
    assert inliner.calls == 8
    assert got == [per_row(catalog, "default", plain_row(i)) for i in range(1, 9)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("empty-selector", " "),
        ("text-directly-in-a-table", " Amy"),
        ("text-in-head", "\tAmy"),
        ("pre", "\nAmy"),
        ("text-and-links", "Amy\r\nBo"),
        ("text-and-links", "Amy\x00"),
        ("text-and-links", "Amy\ud800"),
    ],
    ids=repr,
)
def test_a_row_whose_value_could_parse_otherwise_is_inlined_alone(name, value, inliner):
    # GIVEN a template filled in for plain rows
    catalog = load_catalog(page(name))
    catalog.render("default", plain_row(0))

    # WHEN a row's value starts with a space, or holds CR, NUL or a lone surrogate
    inliner.calls = 0
    got = rendered(catalog, "default", {**plain_row(1), "x": value})

    # THEN that row is inlined as it was before skeletons (a lone surrogate fails there too)
    assert inliner.calls == 1
    assert got == per_row(catalog, "default", {**plain_row(1), "x": value})


def test_an_empty_value_is_part_of_the_skeleton(inliner):
    # GIVEN CSS for empty paragraphs and a template printing an optional value in one
    catalog = load_catalog(page("empty-selector"))
    catalog.render("default", plain_row(0))

    # WHEN rows leave that value empty
    inliner.calls = 0
    got = [rendered(catalog, "default", {**plain_row(i), "x": ""}) for i in range(1, 5)]

    # THEN their skeleton is inlined once, and the empty paragraph gets the :empty style
    assert inliner.calls == 1
    assert got == [per_row(catalog, "default", {**plain_row(i), "x": ""}) for i in range(1, 5)]
    assert got[0].count('<p style="color: #111;"></p>') == 2


def test_skeletons_kept_are_bounded_and_later_ones_are_inlined_per_row(inliner):
    # GIVEN a template whose skeleton changes with every row (a value printed |safe)
    catalog = load_catalog(page("safe-value"))
    rows = [{"x": f"<i>{i}</i>"} for i in range(SKELETON_CACHE_SIZE + 6)]

    # WHEN more rows than the cache holds are rendered
    got = [rendered(catalog, "default", row) for row in rows]

    # THEN the cache stops growing, and every row still gets the per-row HTML
    assert len(catalog._skeletons) == SKELETON_CACHE_SIZE
    assert got == [per_row(catalog, "default", row) for row in rows]


def test_skeletons_that_change_every_row_do_not_crowd_out_a_shared_one(inliner):
    # GIVEN a catalog that has seen more one-off skeletons than it keeps
    catalog = load_catalog(page("safe-value"))
    for i in range(SKELETON_CACHE_SIZE + 6):
        catalog.render("default", {"x": f"<i>{i}</i>"})

    # WHEN rows sharing one skeleton follow
    inliner.calls = 0
    shared = {"x": "<b>same</b>"}
    got = [rendered(catalog, "default", shared) for _ in range(5)]

    # THEN that skeleton is inlined once and kept, and the cache stays bounded
    assert inliner.calls == 1
    assert got == [per_row(catalog, "default", shared)] * 5
    assert len(catalog._skeletons) == SKELETON_CACHE_SIZE


def test_a_safe_value_holding_slot_characters_is_rendered_without_slots():
    # GIVEN a |safe value that holds the characters slots are made of
    catalog = load_catalog(page("safe-value"))
    row = {"x": "\U000f0000\U000f0001"}

    # WHEN it is rendered
    got = rendered(catalog, "default", row)

    # THEN the page holds those characters as they are
    assert got == per_row(catalog, "default", row)
    assert "\U000f0000\U000f0001</p>" in got


# --- any values ------------------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\n",
    "\nAmy",
    " Amy",
    "Amy ",
    "a\r\nb",
    "\r",
    "a\x00b",
    "&",
    "&amp;",
    "&lt;b&gt;",
    "<b>bold</b>",
    "</title>",
    "</style>",
    "</textarea>",
    '"',
    "'",
    "\xa0",
    "\xa0Amy",
    "\ufeffAmy",  # dropped by the parser right after </script>
    "\ufeff ",
    'O\'Brien & "Sons" <Ltd>',
    "Zoë Ångström",
    "李小龙",
    "مرحبا بك",
    "\U000f0000",
    "\U000f0003x",
    "\ufeff",
    "\u2028",
    "x" * 5000,
    "]]>",
    "-->",
    "<!--",
    "{{ 7*7 }}",
    "\t\x0c",
    "\x01\x7f",
    "\ud800",
    "Amy 1",
    "Bo",
    "z",
]
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(list("&<>\"' \n\r\t\x00\xa0ab;#\U000f0001é")), max_size=12),
)
ROWS = st.fixed_dictionaries({"x": VALUES, "y": VALUES, "u": VALUES})


@pytest.mark.parametrize("name", [*sorted(FILLED), *sorted(INLINED), *sorted(PER_VALUE)])
@settings(max_examples=120, deadline=None)
@given(rows=st.lists(ROWS, min_size=1, max_size=4))
def test_any_values_give_the_per_row_html(name, rows):
    catalog = catalog_of(name)
    for row in rows:
        assert rendered(catalog, "default", row) == per_row(catalog, "default", row)


@pytest.mark.parametrize("name", sorted(FILLED))
def test_each_nasty_value_gives_the_per_row_html(name):
    # GIVEN a template whose rows are filled in WHEN each listed value is printed in each slot
    catalog = catalog_of(name)
    for value in NASTY:
        for row in (
            {"x": value, "y": "Bo", "u": "b@example.com"},
            {"x": "Al", "y": value, "u": value},
        ):
            # THEN the page is the one the row inlined by itself gives
            assert rendered(catalog, "default", row) == per_row(catalog, "default", row), value


@settings(max_examples=200, deadline=None)
@given(
    name=VALUES,
    position=VALUES,
    department=VALUES,
    start=VALUES,
    salary=VALUES,
    offer=st.booleans(),
)
def test_bundled_sets_give_the_per_row_html_for_any_values(
    name, position, department, start, salary, offer
):
    catalog = catalog_of("bundled")
    row = {
        "Name": name,
        "Position": position,
        "Department": department,
        "Start_Date": start,
        "Salary": salary,
    }
    template = "offer" if offer else "rejection"
    assert rendered(catalog, template, row) == per_row(catalog, template, row)
