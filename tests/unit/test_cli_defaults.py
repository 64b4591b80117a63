"""Where local runs keep their ledger when no --workdir is given."""

from __future__ import annotations

import pytest

from mailmatrix.cli.defaults import default_workdir, state_dir

# Each folder: how it is found, its variable, the XDG one, and where it is under the home
FOLDERS = pytest.mark.parametrize(
    ("where", "variable", "xdg", "under_home"),
    [
        (default_workdir, "MAILMATRIX_WORKDIR", "XDG_DATA_HOME", ".local/share"),
        (state_dir, "MAILMATRIX_STATE_DIR", "XDG_STATE_HOME", ".local/state"),
    ],
    ids=["default-workdir", "state-folder"],
)


@FOLDERS
def test_the_environment_names_the_folder_else_the_users_own(
    monkeypatch, tmp_path, where, variable, xdg, under_home
):
    monkeypatch.setenv(variable, str(tmp_path / "mine"))
    assert where() == tmp_path / "mine"

    monkeypatch.delenv(variable)
    monkeypatch.setenv(xdg, str(tmp_path / "xdg"))
    assert where() == tmp_path / "xdg" / "mailmatrix"

    monkeypatch.delenv(xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert where() == tmp_path / "home" / under_home / "mailmatrix"
    # the same folder wherever the command runs from
    monkeypatch.chdir(tmp_path)
    assert where().is_absolute() and where() == tmp_path / "home" / under_home / "mailmatrix"


@FOLDERS
def test_a_relative_xdg_folder_is_ignored_and_a_tilde_is_the_home_folder(
    monkeypatch, tmp_path, where, variable, xdg, under_home
):
    # (the XDG Base Directory Specification: a relative path is invalid, to be ignored;
    # a relative one would be another folder, with other records, for each current folder)
    monkeypatch.delenv(variable)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for relative in ("xdg", "./xdg", "~user-not-expanded/xdg"):
        monkeypatch.setenv(xdg, relative)
        assert where() == tmp_path / "home" / under_home / "mailmatrix", relative

    monkeypatch.setenv(xdg, "~/xdg")
    assert where() == tmp_path / "home" / "xdg" / "mailmatrix"


def test_a_relative_state_folder_is_refused_and_a_tilde_is_the_home_folder(monkeypatch, tmp_path):
    from mailmatrix.errors import RecordNotWritable

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAILMATRIX_STATE_DIR", "~/state")
    assert state_dir() == tmp_path / "home" / "state"

    # (another folder, with another record, for each folder the command runs from)
    for relative in ("state", "~user-not-expanded/state"):
        monkeypatch.setenv("MAILMATRIX_STATE_DIR", relative)
        with pytest.raises(RecordNotWritable, match=rf"^MAILMATRIX_STATE_DIR={relative}: not an"):
            state_dir()


def test_the_state_folder_is_not_in_the_default_workdir(monkeypatch, tmp_path):
    # (the record of known workdirs kept there would go back with a backup of the workdir)
    monkeypatch.delenv("MAILMATRIX_STATE_DIR")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for workdir in ("one", "two"):
        monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / workdir))
        assert state_dir() == tmp_path / "home" / ".local" / "state" / "mailmatrix"


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


@pytest.mark.parametrize(
    ("one", "another", "same"),
    [
        ("smtp://127.0.0.1:2525", "smtp://localhost:2525", True),
        ("smtp://127.0.0.1", "smtp://127.0.0.1:25", True),  # the scheme's own port
        ("smtps://relay.invalid", "smtps://RELAY.invalid:465", True),  # no lookup needed
        ("smtp://user@127.0.0.1:2525", "smtp://127.0.0.1:2525", True),
        ("smtp://127.0.0.1:2525", "smtp://127.0.0.1:1025", False),  # a catcher beside it
        ("smtp://127.0.0.1", "smtp+starttls://127.0.0.1", False),  # 25 and 587
        ("smtp://127.0.0.1:2525", "smtp://127.0.0.2:2525", True),  # this machine, all of it
        ("smtp://[::1]:2525", "smtp://127.0.0.1:2525", True),
        ("smtp://0.0.0.0:2525", "smtp://localhost:2525", True),
        ("smtp://[::ffff:127.0.0.1]", "smtp://127.0.0.1:25", True),
        ("smtp://[::1]:2525", "smtp://[::1]:2526", False),
        ("smtp://192.0.2.1", "smtp://127.0.0.1", False),  # another host, by address
    ],
)
def test_deliveries_are_one_server_by_host_address_and_port(one, another, same):
    # (names here are equal, or localhost, which /etc/hosts answers: no lookup leaves)
    from mailmatrix.local import same_server

    assert same_server(one, another) is same
    assert same_server(another, one) is same


@pytest.mark.parametrize(
    ("url", "delivery"),
    [
        ("smtp://[::1]:2525", "smtp://[::1]:2525"),
        ("smtp://user:pw@[::ffff:127.0.0.1]", "smtp://user@[::ffff:127.0.0.1]"),
        ("smtps://relay.example.com:465?timeout=5", "smtps://relay.example.com:465"),
        ("maildir:///tmp/x", "outbox"),
    ],
)
def test_a_delivery_is_the_url_without_its_password_and_options(url, delivery):
    from mailmatrix.local import delivery_of

    assert delivery_of(url) == delivery


def test_a_workdir_in_the_home_of_no_such_user_is_said_not_a_traceback(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN a MAILMATRIX_WORKDIR in the home folder of a user this machine does not have
    monkeypatch.setenv("MAILMATRIX_WORKDIR", "~no-such-user-here/mailmatrix")
    monkeypatch.chdir(tmp_path)

    # WHEN a command takes it as its default workdir
    ran = CliRunner().invoke(cli, ["executions"])

    # THEN it says which setting, exits as for an unusable input, and makes no folder
    assert ran.exit_code == 3, ran.output
    assert "MAILMATRIX_WORKDIR=~no-such-user-here/mailmatrix: no such user's home" in ran.output
    assert not isinstance(ran.exception, RuntimeError)
    assert list(tmp_path.iterdir()) == []
