"""An SMTP password given in --smtp is used for the run, never kept in the workdir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailmatrix import local
from mailmatrix.adapters.smtp_urls import url_warnings
from mailmatrix.errors import ConfigurationError


def test_the_workdirs_settings_keep_the_url_without_its_password(tmp_path: Path):
    # GIVEN the settings of a run through a server with user:password@
    workdir = local.Workdir(tmp_path / "w")
    env = {"MAILMATRIX_MAILER": "smtp+starttls://hr:s3cret@127.0.0.1:2525", "OTHER": "1"}

    # WHEN the workdir records them
    local.prepare(workdir, env)

    # THEN the file keeps the user, not the password
    kept = json.loads(workdir.settings_file.read_text(encoding="utf-8"))
    assert kept == {"MAILMATRIX_MAILER": "smtp+starttls://hr@127.0.0.1:2525", "OTHER": "1"}
    assert "s3cret" not in workdir.settings_file.read_text(encoding="utf-8")


def test_a_redrive_needing_the_password_is_refused_saying_where_to_give_it(monkeypatch):
    # GIVEN an execution whose server takes a login, and no MAILMATRIX_SMTP_PASSWORD
    monkeypatch.delenv("MAILMATRIX_SMTP_PASSWORD", raising=False)
    env = {"MAILMATRIX_MAILER": "smtp://hr@127.0.0.1:2525"}

    # WHEN it is redriven THEN it is refused before sending, naming both ways on
    with pytest.raises(ConfigurationError) as refused:
        local._check_password_given(env)
    assert "Set MAILMATRIX_SMTP_PASSWORD" in refused.value.message
    assert "--smtp" in refused.value.message

    # AND with the variable set, or no login, it goes on
    monkeypatch.setenv("MAILMATRIX_SMTP_PASSWORD", "s3cret")
    local._check_password_given(env)
    monkeypatch.delenv("MAILMATRIX_SMTP_PASSWORD")
    local._check_password_given({"MAILMATRIX_MAILER": "smtp://127.0.0.1:2525"})


@pytest.mark.parametrize(
    ("url", "password_set", "said"),
    [
        ("smtp://hr:s3cret@127.0.0.1:25", False, "carries a password"),
        ("smtp://127.0.0.1:25", True, "names no user"),
        ("smtp://hr@127.0.0.1:25", True, None),
        ("smtp://127.0.0.1:25", False, None),
        (None, True, None),
    ],
    ids=["password-in-url", "variable-unused", "user-and-variable", "no-login", "outbox"],
)
def test_a_password_in_the_url_or_one_left_unused_is_warned_of(url, password_set, said):
    warnings = url_warnings(url, password_set)
    assert [said in warning for warning in warnings] == ([True] if said else [])
    assert all("s3cret" not in warning for warning in warnings)
