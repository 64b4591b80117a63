"""Fixtures for every test: nothing writes to the real home folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _default_workdir_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Commands run without --workdir use a folder of the test session, not ~/.local/share."""
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path_factory.getbasetemp() / "workdir"))
