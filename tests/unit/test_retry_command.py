"""The command a summary gives for sending a campaign's failed rows again, where it ran."""

from __future__ import annotations

import pytest

from mailmatrix.jobs import Source, retry_command, run_again_command


@pytest.mark.parametrize(
    ("key", "stack", "command"),
    [
        ("incoming/offers.csv", "", "mailmatrix run FILE --retry-failed"),
        (
            "incoming/offers.csv",
            "mm",
            "mailmatrix aws send offers.csv --stack mm --retry-failed",
        ),
        (
            "incoming/offers 2027.csv",
            "mm",
            "mailmatrix aws send 'offers 2027.csv' --stack mm --retry-failed",
        ),
        (
            "incoming/hr/offers.csv",
            "mm",
            "aws s3 cp offers.csv s3://b/incoming/hr/offers.csv"
            " --metadata mailmatrix-retry-failed=true",
        ),
    ],
    ids=["local", "stack", "quoted", "other-key"],
)
def test_the_retry_command_names_where_the_campaign_runs(key, stack, command):
    # GIVEN an upload under ``key`` on ``stack`` (none: this machine) WHEN asked THEN
    # the command sends the same campaign again: `aws send` uploads to incoming/NAME only
    assert retry_command(Source("b", key, "e"), stack) == command


@pytest.mark.parametrize(
    ("key", "stack", "command"),
    [
        ("incoming/offers.csv", "", "mailmatrix run FILE --retry-unknown"),
        ("incoming/offers.csv", "mm", "mailmatrix aws send offers.csv --stack mm --retry-unknown"),
        (
            "incoming/hr/offers.csv",
            "mm",
            "aws s3 cp offers.csv s3://b/incoming/hr/offers.csv"
            " --metadata mailmatrix-retry-unknown=true",
        ),
    ],
    ids=["local", "stack", "other-key"],
)
def test_the_command_for_rows_failed_as_outcome_unknown_asks_for_them(key, stack, command):
    assert retry_command(Source("b", key, "e"), stack, unknown=True) == command


@pytest.mark.parametrize(
    ("key", "stack", "command"),
    [
        ("incoming/offers.csv", "", "mailmatrix run FILE"),
        ("incoming/offers.csv", "mm", "mailmatrix aws send offers.csv --stack mm"),
        ("incoming/hr/offers.csv", "mm", "aws s3 cp offers.csv s3://b/incoming/hr/offers.csv"),
    ],
    ids=["local", "stack", "other-key"],
)
def test_the_command_that_runs_the_file_again_asks_for_no_failed_rows(key, stack, command):
    # GIVEN an upload under ``key`` on ``stack`` WHEN asked for a plain run of it (what rows
    # failed as AttachmentChanged need) THEN it is the retry's command without the retry
    assert run_again_command(Source("b", key, "e"), stack) == command
