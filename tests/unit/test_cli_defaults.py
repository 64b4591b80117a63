"""Where local runs keep their ledger when no --workdir is given."""

from __future__ import annotations

from pathlib import Path

from mailmatrix.cli.defaults import default_workdir


def test_the_environment_names_the_default_workdir_else_the_user_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "mine"))
    assert default_workdir() == tmp_path / "mine"

    monkeypatch.delenv("MAILMATRIX_WORKDIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_workdir() == tmp_path / "data" / "mailmatrix"

    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_workdir() == tmp_path / "home" / ".local" / "share" / "mailmatrix"
    # the same folder wherever the command runs from
    monkeypatch.chdir(tmp_path)
    assert default_workdir().is_absolute() and default_workdir() == Path(
        tmp_path / "home" / ".local" / "share" / "mailmatrix"
    )


def test_a_paced_local_run_runs_one_batch_per_worker_process(monkeypatch, tmp_path):
    # The plan splits the send rate between the batches running at once: four batches on two
    # worker processes sent at half the rate asked for
    from mailmatrix import local

    monkeypatch.setattr(local, "_cores", lambda: 2)
    workdir = local.Workdir(tmp_path)
    folders = {"templates_dir": tmp_path, "attachments_dir": tmp_path}

    paced = local.local_settings(workdir, send_rate=50, **folders)
    unpaced = local.local_settings(workdir, **folders)
    drill = local.local_settings(workdir, send_rate=50, faults="seed=1", **folders)
    chosen = local.local_settings(workdir, send_rate=50, max_concurrency=3, **folders)

    assert paced["MAILMATRIX_MAX_CONCURRENCY"] == "2"
    assert unpaced["MAILMATRIX_MAX_CONCURRENCY"] == "4"
    assert drill["MAILMATRIX_MAX_CONCURRENCY"] == "4"  # a drill sends from threads
    assert chosen["MAILMATRIX_MAX_CONCURRENCY"] == "3"
