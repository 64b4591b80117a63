"""Validation withdraws a row whose own file is named like another recipient's letter."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.core.templates import load_catalog
from mailmatrix.errors import TemplateError
from tests.unit.test_recipients import FakeCatalog, index_of, reasons, run

SWAPPED = [
    "anna@example.com;Anna Meier;active;Angebot_Anna_Meier_1.pdf",
    "bjoern@example.com;Björn Löwe;active;Angebot_Sören_Schäfer_3.pdf",
    "soeren@example.com;Sören Schäfer;active;Angebot_Björn_Löwe_2.pdf",
    "jan@example.com;Jan Ostrowski;active;Angebot_Jan_Ostrowski_4.pdf",
]


def csv_of(rows: list[str], header: str = "Email;Name;Status;Attachment_File") -> str:
    return "\r\n".join([header, *rows]) + "\r\n"


def files_of(rows: list[str]) -> list[str]:
    return [row.rsplit(";", 1)[1] for row in rows]


def test_swapped_files_withdraw_both_rows_naming_the_other_row_and_file():
    # GIVEN Björn's row naming Sören's letter and Sören's naming Björn's
    # WHEN the file is validated
    report, _ = run(csv_of(SWAPPED), index=index_of(*files_of(SWAPPED)))

    # THEN neither goes out, each reason naming the other row, its name and the file
    assert report.withdrawn == frozenset({3, 4})
    assert report.valid == 2
    assert reasons(report) == [
        (
            3,
            "Attachment_File",
            "the file Angebot_Sören_Schäfer_3.pdf is named like the letter of Sören Schäfer "
            "(row 4), not of this row's recipient, so this row is not sent: name this "
            "recipient's own file in Attachment_File (if the file is right, set "
            "check_file_names: false in manifest.yaml)",
        ),
        (
            4,
            "Attachment_File",
            "the file Angebot_Björn_Löwe_2.pdf is named like the letter of Björn Löwe (row 3), "
            "not of this row's recipient, so this row is not sent: name this recipient's own "
            "file in Attachment_File (if the file is right, set check_file_names: false in "
            "manifest.yaml)",
        ),
    ]


def test_first_and_last_name_columns_and_folded_accents_are_compared():
    # GIVEN Vorname/Nachname columns and a file of another row spelt without accents
    rows = [
        "anna@example.com;Anna;Meier;active;OFFER-SOREN-2026.pdf",
        "soeren@example.com;Sören;Schäfer;active;offer-schafer-soren.pdf",
        "jan@example.com;Jan;Ostrowski;active;offer-ostrowski.pdf",
    ]
    header = "Email;Vorname;Nachname;Status;Attachment_File"
    catalog = FakeCatalog(uses={"offer": set()})

    # WHEN the file is validated
    report, _ = run(csv_of(rows, header), catalog=catalog, index=index_of(*files_of(rows)))

    # THEN the row naming one distinctive word of another recipient's name is withdrawn
    assert report.withdrawn == frozenset({2})
    assert [(row, column, reason.split(", not")[0]) for row, column, reason in reasons(report)] == [
        (
            2,
            "Attachment_File",
            "the file OFFER-SOREN-2026.pdf is named like the letter of SOREN (row 3)",
        )
    ]


def test_the_later_row_of_the_name_is_found_as_well_as_an_earlier_one():
    # GIVEN the row naming another's file comes before that recipient's row
    rows = [
        "jan@example.com;Jan Ostrowski;active;letter_anna_meier.pdf",
        "anna@example.com;Anna Meier;active;letter_jan_ostrowski.pdf",
    ]

    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN both are withdrawn, each naming the other's row
    assert report.withdrawn == frozenset({2, 3})
    assert [reason.split(", not")[0] for _, _, reason in reasons(report)] == [
        "the file letter_anna_meier.pdf is named like the letter of anna meier (row 3)",
        "the file letter_jan_ostrowski.pdf is named like the letter of jan ostrowski (row 2)",
    ]


@pytest.mark.parametrize(
    "rows",
    [
        # files named with no one's name, or with words every file has
        [
            "anna@example.com;Anna Meier;active;Angebot_2026_1.pdf",
            "jan@example.com;Jan Ostrowski;active;Angebot_2026_2.pdf",
            "offer@example.com;Brief Angebot;active;Angebot_2026_3.pdf",
        ],
        # one short word of another's name (Jan, the month), a surname several recipients have
        [
            "anna@example.com;Anna Müller;active;Offer_Jan_Mueller.pdf",
            "jan@example.com;Jan Ostrowski;active;Offer_Ostrowski.pdf",
            "hans@example.com;Hans Müller;active;Offer_Hans_Müller.pdf",
            "eva@example.com;Eva Müller;active;Offer_Müller.pdf",
        ],
        # the recipient's own name beside another's
        [
            "anna@example.com;Anna Meier;active;Anna_Meier_for_Jan_Ostrowski.pdf",
            "jan@example.com;Jan Ostrowski;active;Jan_Ostrowski.pdf",
        ],
        # a word of the recipient's name beside another's first name: a nickname of theirs
        [
            "katharina@example.com;Katharina Schulz;active;Angebot_Kathi_Schulz.pdf",
            "kathi@example.com;Kathi Braun;active;Angebot_Kathi_Braun.pdf",
            "jan@example.com;Jan Ostrowski;active;Angebot_Jan_Ostrowski.pdf",
        ],
        # the recipient's name with ä ö ü ø æ å ß spelt out (or O'Brien without its apostrophe),
        # and other recipients named as the spelt-out words are
        [
            "juergen@example.com;Jürgen Müller;active;Angebot_Juergen_Mueller.pdf",
            "thomas@example.com;Thomas Mueller;active;Angebot_Thomas_Mueller.pdf",
        ],
        [
            "soeren@example.com;Søren Østergaard;active;Soeren_Oestergaard.pdf",
            "hansen@example.com;Soeren Hansen;active;Soeren_Hansen.pdf",
            "ostergaard@example.com;Lars Ostergaard;active;Lars_Ostergaard.pdf",
        ],
        [
            "asa@example.com;Åsa Ærø;active;Offer_Aasa_Aeroe.pdf",
            "aasa@example.com;Aasa Lind;active;Offer_Aasa_Lind.pdf",
            "aero@example.com;Per Aero;active;Offer_Per_Aero.pdf",
            "gross@example.com;Jens Groß;active;Offer_Jens_Gross.pdf",
            "sven@example.com;Sven Gross;active;Offer_Sven_Gross.pdf",
        ],
        [
            "sean@example.com;Seán O'Brien;active;sean-obrien.pdf",
            "kate@example.com;Kate Obrien;active;kate-obrien.pdf",
        ],
    ],
    ids=[
        "no-names",
        "weak-words",
        "own-name-too",
        "nickname",
        "umlauts",
        "danish-o",
        "a-ring-ae-sharp-s",
        "apostrophe",
    ],
)
def test_files_not_named_for_another_recipient_pass(rows):
    # WHEN files named with no other recipient's name (or their own too) are validated
    report, emitted = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN every row goes out
    assert (report.withdrawn, reasons(report)) == (frozenset(), [])
    assert len(emitted) == len(rows)


def test_check_file_names_false_lets_the_rows_go():
    # GIVEN a manifest that turned the check off
    catalog = FakeCatalog()
    catalog.check_file_names = False  # type: ignore[attr-defined]

    # WHEN the swapped files are validated
    report, emitted = run(csv_of(SWAPPED), catalog=catalog, index=index_of(*files_of(SWAPPED)))

    # THEN every row goes out
    assert (report.withdrawn, len(emitted)) == (frozenset(), 4)


MANIFEST = "sets:\n  offer:\n    when: [Offer]\n"
SET = {"offer/subject.txt": "Hi", "offer/body.txt": "Hello"}


def test_the_manifest_reads_check_file_names_and_refuses_other_than_true_or_false():
    assert load_catalog({"manifest.yaml": MANIFEST, **SET}).check_file_names is True
    off = load_catalog({"manifest.yaml": "check_file_names: false\n" + MANIFEST, **SET})
    assert off.check_file_names is False
    with pytest.raises(TemplateError, match="'check_file_names' must be true or false"):
        load_catalog({"manifest.yaml": "check_file_names: maybe\n" + MANIFEST, **SET})


def test_the_manifest_reads_check_question_marks_and_refuses_other_than_true_or_false():
    assert load_catalog({"manifest.yaml": MANIFEST, **SET}).check_question_marks is True
    off = load_catalog({"manifest.yaml": "check_question_marks: false\n" + MANIFEST, **SET})
    assert off.check_question_marks is False
    with pytest.raises(TemplateError, match="'check_question_marks' must be true or false"):
        load_catalog({"manifest.yaml": "check_question_marks: 1\n" + MANIFEST, **SET})


def test_a_swap_among_many_files_named_alike_is_found_and_the_alike_are_not_kept(monkeypatch):
    # GIVEN 300 rows whose files are letter-N.pdf (no word of their recipient's name), then
    # Björn's and Sören's swapped files; rows are looked through again every 20 kept
    from mailmatrix.core import recipients

    monkeypatch.setattr(recipients, "_UNNAMED_FIRST", 20)
    kept: list[int] = []
    forget = recipients._Intake._forget_common_files

    def counting(intake: recipients._Intake) -> None:
        forget(intake)
        kept.append(len(intake.unnamed_files))

    monkeypatch.setattr(recipients._Intake, "_forget_common_files", counting)
    alike = [f"p{i}@example.com;Person Nummer;active;letter-{i}.pdf" for i in range(300)]
    rows = [*alike, *SWAPPED[1:3]]

    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN the swap is found, and of the files named alike none was kept once "letter" was
    # in more than 50 file names: the rows kept never grew with the file
    assert report.withdrawn == frozenset({302, 303})
    assert kept and max(kept) <= 50


def test_the_check_is_given_up_with_a_warning_when_too_many_files_are_kept(monkeypatch):
    # GIVEN files each named with a word of its own that is no recipient's name, and a limit
    # of 10 rows kept
    from mailmatrix.core import recipients

    monkeypatch.setattr(recipients, "_UNNAMED_FIRST", 5)
    monkeypatch.setattr(recipients, "_UNNAMED_MAX", 10)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    odd = [f"x{i}@example.com;Person Nummer;active;{w}-{v}.pdf" for i, (w, v) in
           enumerate((w, v) for w in words for v in words)]  # fmt: skip
    rows = [*odd, *SWAPPED[1:3]]

    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN the check was given up, said in a warning, and nothing was withdrawn for it
    assert any("check_file_names" in w and "was not checked" in w for w in report.warnings)
    assert report.withdrawn == frozenset()


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (
            [
                "weber@example.com;Anna Weber;active;Angebot_Anna_Schulz.pdf",
                "schulz@example.com;Anna Schulz;active;Angebot_Anna_Weber.pdf",
                "jan@example.com;Jan Ostrowski;active;Angebot_Jan_Ostrowski.pdf",
            ],
            ["Schulz", "Weber"],
        ),
        (
            [
                "anna@example.com;Anna Müller;active;Angebot_Müller_Peter.pdf",
                "peter@example.com;Peter Müller;active;Angebot_Müller_Anna.pdf",
                "jan@example.com;Jan Ostrowski;active;Angebot_Jan_Ostrowski.pdf",
            ],
            ["Peter", "Anna"],
        ),
    ],
    ids=["same-first-name", "same-surname"],
)
def test_a_swap_between_people_sharing_a_name_word_is_found(rows, words):
    # GIVEN two people of one first name (or surname) given each other's file
    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN neither goes out: the word of each file that is not of its row's name is the
    # other's, though the word both share is the row's own
    assert report.withdrawn == frozenset({2, 3})
    assert [(row, reason.split(", not")[0]) for row, _, reason in reasons(report)] == [
        (2, f"the file {files_of(rows)[0]} is named like the letter of {words[0]} (row 3)"),
        (3, f"the file {files_of(rows)[1]} is named like the letter of {words[1]} (row 2)"),
    ]


def test_a_short_surname_alone_names_its_recipient_but_a_short_first_name_does_not():
    # GIVEN Min-jun Park given the file of Ji-woo Kim, whose surname has three letters; Eva
    # Lee given a file named with Jan, the first name of another, and Lee, her own surname
    rows = [
        "park@example.com;Min-jun Park;active;Offer_Kim.pdf",
        "kim@example.com;Ji-woo Kim;active;Offer_Ji-woo_Kim.pdf",
        "jan@example.com;Jan Ostrowski;active;Offer_Jan_Ostrowski.pdf",
        "eva@example.com;Eva Lee;active;Offer_Jan_Lee.pdf",
    ]

    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN only Min-jun Park's row is withdrawn, for Kim
    assert report.withdrawn == frozenset({2})
    assert [reason.split(", not")[0] for _, _, reason in reasons(report)] == [
        "the file Offer_Kim.pdf is named like the letter of Kim (row 3)"
    ]


def test_a_short_surname_of_two_recipients_names_neither():
    # GIVEN two recipients named Kim, and a third given a file named Kim
    rows = [
        "park@example.com;Min-jun Park;active;Offer_Kim.pdf",
        "kim@example.com;Ji-woo Kim;active;Offer_Ji-woo_Kim.pdf",
        "kim2@example.com;Seo-yeon Kim;active;Offer_Seo-yeon_Kim.pdf",
    ]

    # WHEN the file is validated
    report, emitted = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN every row goes out
    assert (report.withdrawn, reasons(report), len(emitted)) == (frozenset(), [], 3)


@pytest.mark.parametrize(
    ("rows", "withdrawn"),
    [
        # Jürgen Müller and Björn Löwe given each other's file, spelt out
        (
            [
                "juergen@example.com;Jürgen Müller;active;Angebot_Bjoern_Loewe.pdf",
                "bjoern@example.com;Björn Löwe;active;Angebot_Jurgen_Muller.pdf",
                "jan@example.com;Jan Ostrowski;active;Angebot_Jan_Ostrowski.pdf",
            ],
            {2, 3},
        ),
        # names in Chinese and Cyrillic letters, their files named in Latin ones, recipients
        # named Chen and Ivanov; and two Chinese names given each other's file
        (
            [
                "jing@example.com;陈静;active;chen-jing.pdf",
                "wei@example.com;Chen Wei;active;chen-wei.pdf",
                "dmitry@example.com;Дмитрий Иванов;active;ivanov_dmitry.pdf",
                "olga@example.com;Olga Ivanov;active;ivanov_olga.pdf",
                "fang@example.com;王芳;active;offer-陈伟.pdf",
                "chenwei@example.com;陈伟;active;offer-王芳.pdf",
            ],
            {6, 7},
        ),
    ],
    ids=["spelt-out", "other-letters"],
)
def test_swaps_are_found_however_names_are_written_and_latin_words_hold_no_other_script(
    rows, withdrawn
):
    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN only the swapped rows are withdrawn: a name in other letters than Latin is not held
    # back for the Latin words of its file
    assert report.withdrawn == frozenset(withdrawn)


def test_a_row_an_earlier_run_sent_is_passed_on_again_and_said_to_need_nothing():
    # GIVEN Björn's and Sören's swapped files, where an earlier run of the file sent Björn's
    # row (Sören's was added since)
    asked: list[frozenset[int]] = []

    def sent_before(rows: frozenset[int]) -> frozenset[int]:
        asked.append(rows)
        return frozenset({3})

    # WHEN the file is validated
    report, emitted = run(
        csv_of(SWAPPED), index=index_of(*files_of(SWAPPED)), sent_before=sent_before
    )

    # THEN Björn's row is passed on (sending skips it as already sent), not rejected, and a
    # warning says it went and needs nothing; Sören's row is withdrawn as before
    assert asked == [frozenset({3, 4})]
    assert (report.withdrawn, report.valid) == (frozenset({4}), 3)
    assert [row for row, _, _ in reasons(report)] == [4]
    assert [item["row"] for item in emitted] == [2, 3, 4, 5]
    assert report.warnings == [
        "row 3: the file Angebot_Sören_Schäfer_3.pdf is named like the letter of Sören Schäfer "
        "(row 4), not of this row's recipient, and an earlier run of this file sent it to this "
        "row's recipient: this row is not sent again and needs nothing (if the file was not "
        "this recipient's own, it went to them in that run)"
    ]


def test_a_row_sent_earlier_and_withdrawn_for_more_than_its_file_name_stays_rejected():
    # GIVEN Björn's row, sent by an earlier run, whose file is named like Sören's letter and
    # is the file of a row added since for a third person
    rows = [*SWAPPED, "eva@example.com;Eva Lind;active;Angebot_Sören_Schäfer_3.pdf"]

    # WHEN the file is validated
    report, _ = run(
        csv_of(rows), index=index_of(*files_of(rows)), sent_before=lambda _: frozenset({3})
    )

    # THEN Björn's row stays rejected, its reason naming both: the shared file first
    assert 3 in report.withdrawn
    reason = dict((row, reason) for row, _, reason in reasons(report))[3]
    assert reason.startswith("Angebot_Sören_Schäfer_3.pdf went to this row's recipient in an")
    assert "is named like the letter of Sören Schäfer (row 4)" in reason
    assert report.warnings == []


def test_run_counts_a_row_an_earlier_run_sent_as_already_sent_when_a_new_row_names_it(tmp_path):
    # GIVEN Anna Weber's file named with Schulz (no one's name then), sent by a first run
    folder = tmp_path / "attachments"
    folder.mkdir()
    for name in ("Angebot_Anna_Schulz", "Angebot_Jan_Ostrowski", "Angebot_Peter_Schulz"):
        (folder / f"{name}.pdf").write_bytes(f"%PDF-1.4 {name}\n".encode())
    campaign = tmp_path / "offers.csv"
    header = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\n"
    rows = [
        "anna@example.com,Anna Weber,Offer,Angebot_Anna_Schulz.pdf,Eng,R,2027,1\n",
        "jan@example.com,Jan Ostrowski,Offer,Angebot_Jan_Ostrowski.pdf,Eng,R,2027,1\n",
    ]
    campaign.write_text(header + "".join(rows), encoding="utf-8")
    command = ["run", str(campaign), "--workdir", str(tmp_path / "work"), "--json"]
    first = CliRunner().invoke(cli, command)
    assert json.loads(first.stdout)["counts"]["sent"] == 2

    # WHEN Peter Schulz's row is added and the file runs again
    with campaign.open("a", encoding="utf-8") as out:
        out.write("peter@example.com,Peter Schulz,Offer,Angebot_Peter_Schulz.pdf,Eng,R,2027,1\n")
    again = json.loads(CliRunner().invoke(cli, command).stdout)

    # THEN Anna's row counts as already sent, not as rejected, and Peter's letter goes out
    counts = again["counts"]
    assert (counts["sent"], counts["skipped"], counts["rejected"]) == (1, 2, 0)


def test_rows_sent_earlier_beyond_the_first_few_are_counted_in_one_warning(monkeypatch):
    # GIVEN both swapped rows sent by an earlier run, and one row shown by name at most
    from mailmatrix.core import recipients

    monkeypatch.setattr(recipients, "_SHOWN_SENT_NAMED_LIKE", 1)

    # WHEN the file is validated
    report, emitted = run(
        csv_of(SWAPPED), index=index_of(*files_of(SWAPPED)), sent_before=lambda _: {3, 4}
    )

    # THEN both are passed on; the first is named, the other counted
    assert (report.withdrawn, reasons(report), len(emitted)) == (frozenset(), [], 4)
    assert [warning[:6] for warning in report.warnings] == ["row 3:", "1 more"]
    assert report.warnings[1].endswith("they are not sent again and need nothing")


@pytest.mark.parametrize(
    ("name", "file_word", "other"),
    [
        ("Łukasz Wróbel", "lukasz", "Lukasz Nowak"),
        ("Işıl Demir", "isil", "Isil Kaya"),
        ("Đorđe Petrović", "djordje", "Djordje Ilic"),
        ("Đorđe Petrović", "dorde", "Dorde Ilic"),
        ("Søren Holm", "soren", "Soren Berg"),
        ("Ægir Lund", "aegir", "Aegir Berg"),
        ("Lœtitia Roy", "loetitia", "Loetitia Blanc"),
        ("Þórunn Jónsdóttir", "thorunn", "Thorunn Berg"),
    ],
    ids=["l-stroke", "dotless-i", "d-stroke-dj", "d-stroke-d", "o-slash", "ae", "oe", "thorn"],
)
def test_a_file_named_with_the_rows_own_name_spelt_in_ascii_passes(name, file_word, other):
    # GIVEN a row whose file spells its own first name in ASCII, and another recipient whose
    # name is spelt so
    rows = [
        f"one@example.com;{name};active;offer_{file_word}.pdf",
        f"two@example.com;{other};active;offer_{other.replace(' ', '_').lower()}.pdf",
        "jan@example.com;Jan Ostrowski;active;offer_jan_ostrowski.pdf",
    ]

    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN no row is withdrawn
    assert reasons(report) == []
    assert report.withdrawn == frozenset()


@pytest.mark.parametrize(
    "rows",
    [
        [
            "anna.w@example.com;Anna Weber;active;AnnaSchulz.pdf",
            "anna.s@example.com;Anna Schulz;active;AnnaWeber.pdf",
            "jan@example.com;Jan Ostrowski;active;JanOstrowski.pdf",
        ],
        [
            "max@example.com;Max Müller;active;tim_mueller.pdf",
            "tim@example.com;Tim Müller;active;max_mueller.pdf",
            "jan@example.com;Jan Ostrowski;active;jan_ostrowski.pdf",
        ],
    ],
    ids=["camel-case", "shared-surname-short-first-names"],
)
def test_swapped_files_are_found_in_camel_case_and_by_a_short_first_name(rows):
    # GIVEN two recipients' files swapped
    # WHEN the file is validated
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))

    # THEN both rows are withdrawn, each naming the other's row
    assert report.withdrawn == frozenset({2, 3})
    assert [(row, reason.split("(row ")[1][0]) for row, _, reason in reasons(report)] == [
        (2, "3"),
        (3, "2"),
    ]


def test_a_camel_case_name_file_of_the_rows_own_name_passes():
    # GIVEN Mary McDonald's MaryMcDonald.pdf, and a recipient named Donald
    rows = [
        "mary@example.com;Mary McDonald;active;MaryMcDonald.pdf",
        "donald@example.com;Donald Brown;active;DonaldBrown.pdf",
        "jan@example.com;Jan Ostrowski;active;JanOstrowski.pdf",
    ]

    # WHEN validated THEN no row is withdrawn
    report, _ = run(csv_of(rows), index=index_of(*files_of(rows)))
    assert reasons(report) == []


def test_only_the_recipients_own_name_columns_count_as_their_name():
    # GIVEN Anna Weber's row naming her manager's file, and the manager a recipient too
    header = "Email;Name;Manager_Name;Status;Attachment_File"
    rows = [
        "anna@example.com;Anna Weber;Tom Schulz;active;tom_schulz.pdf",
        "tom@example.com;Tom Schulz;Eva Berg;active;anna_weber.pdf",
        "jan@example.com;Jan Ostrowski;Eva Berg;active;jan_ostrowski.pdf",
    ]
    catalog = FakeCatalog(uses={"offer": set()})

    # WHEN the file is validated
    report, _ = run(csv_of(rows, header), catalog=catalog, index=index_of(*files_of(rows)))

    # THEN the manager's name is not Anna's: both swapped rows are withdrawn
    assert report.withdrawn == frozenset({2, 3})
