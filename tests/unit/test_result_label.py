"""What `executions` and `show` say an execution did, from its summary or from the ledger."""

from __future__ import annotations

import pytest

from mailmatrix.cli.engine_cmds import result_label, status_label

PROGRESS = {"valid": 10, "sent": 3, "in_doubt": 1, "unsent": 6, "rejected": 2, "excluded": 1}


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("RUNNING", "so far: 3 sent, 1 being sent, 6 not sent yet, 2 rejected, 1 excluded"),
        (
            "ABORTED",
            "stopped: 3 sent, 1 in doubt (being sent as the run ended), 6 not sent yet, "
            "2 rejected, 1 excluded",
        ),
    ],
)
def test_an_execution_without_a_summary_is_told_by_the_ledger(status, said):
    assert said in result_label(None, PROGRESS, status)


def test_a_summary_counts_every_kind_of_row_it_has():
    counts = {"sent": 18, "rejected": 2, "excluded": 1, "skipped": 0}
    assert result_label({"counts": counts}) == "18 sent, 2 rejected, 1 excluded"


@pytest.mark.parametrize(
    ("counts", "said"),
    [
        ({"sent": 0, "failed": 34}, "[yellow]SUCCEEDED, 34 FAILED[/]"),
        (
            {"sent": 5, "failed": 1, "in_doubt": 2, "unsent": 1_200},
            "[yellow]SUCCEEDED, 1 FAILED, 2 IN DOUBT, 1,200 NOT SENT[/]",
        ),
        ({"sent": 18, "rejected": 2, "failed": 0}, "[green]SUCCEEDED[/]"),
    ],
    ids=["all-failed", "some-left", "all-sent"],
)
def test_a_run_that_succeeded_but_left_rows_unsent_says_so_in_its_status(counts, said):
    assert status_label("SUCCEEDED", {"counts": counts}) == said


def test_a_status_other_than_succeeded_is_shown_as_it_is():
    assert status_label("FAILED", {"counts": {"failed": 3}}) == "[red]FAILED[/]"
    assert status_label("RUNNING") == "[yellow]RUNNING[/]"
