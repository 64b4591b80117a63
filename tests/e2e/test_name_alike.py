"""A file whose name is that of a file run before but for case is refused, on AWS as locally.

``Offers.csv`` after ``offers.csv`` names another campaign (a campaign is its file's name),
so it would be sent in full: everyone in it mailed again, though a disk that ignores case,
and a person, take the two for one file. Validate refuses it (the ledger records each
campaign's name), before anything is written for it; `run` and `validate` say so first.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.errors import NameLikeAnother
from mailmatrix.jobs import Source, validate_job
from mailmatrix.settings import Settings
from tests.e2e.test_aws_adapters_e2e import BUCKET, EXAMPLE


def _validated(account, storage, ledger, key: str, *, stack: str = "") -> dict:
    body = (EXAMPLE / "recipients.csv").read_bytes()
    put = account["s3"].put_object(Bucket=BUCKET, Key=key, Body=body)
    source = Source(BUCKET, key, put["ETag"].strip('"'), put.get("VersionId"))
    settings = dataclasses.replace(Settings.from_env(), stack=stack)
    return validate_job(storage, source, settings, open_ledger=lambda: ledger, execution=key)


def test_validate_refuses_a_name_alike_another_campaigns(setting):
    # GIVEN offers.csv validated on a stack
    account, storage, ledger = setting
    first = _validated(account, storage, ledger, "incoming/offers.csv", stack="hr")

    # WHEN the same rows are uploaded as Offers.csv
    with pytest.raises(NameLikeAnother) as refused:
        _validated(account, storage, ledger, "incoming/Offers.csv", stack="hr")

    # THEN Validate refuses it, naming the campaign and the name to upload it under
    assert refused.value.details["campaign"] == first["campaign"]["id"]
    assert refused.value.message.startswith(
        f"'Offers.csv': a file named 'offers.csv' was run before (campaign"
        f" {first['campaign']['id']})"
    )
    assert "upload it as incoming/offers.csv (the name it had)" in refused.value.message
    # AND nothing was written for it: no manifest, no report, the first name still its own
    listed = [info.key for info in storage.list("validated/")]
    assert all(first["campaign"]["id"] in key for key in listed)
    assert ledger.named_alike(f"{BUCKET}/incoming/OFFERS.csv").name == (
        f"{BUCKET}/incoming/offers.csv"
    )
    # AND the first name validates again (a corrected upload of the same campaign)
    assert (
        _validated(account, storage, ledger, "incoming/offers.csv")["campaign"]["id"]
        == (first["campaign"]["id"])
    )


def _copies(tmp_path, *names: str) -> dict[str, str]:
    """The example's rows under each of ``names``, each in a folder of its own."""
    paths = {}
    for number, name in enumerate(names):
        folder = tmp_path / f"copy-{number}"
        folder.mkdir()
        shutil.copy(EXAMPLE / "recipients.csv", folder / name)
        paths[name] = str(folder / name)
    return paths


def _in_outbox(workdir) -> int:
    return len(list((workdir / "outbox" / "new").iterdir()))


@pytest.mark.parametrize("recorded", [True, False], ids=["names-recorded", "workdir-from-before"])
def test_run_and_validate_refuse_a_name_alike_a_file_run_before(tmp_path, recorded):
    # GIVEN the example run as offers.csv (18 letters)
    paths = _copies(tmp_path, "offers.csv", "Offers.csv")
    workdir = tmp_path / "w"
    common = ["--attachments", str(EXAMPLE / "attachments"), "--workdir", str(workdir)]
    first = CliRunner().invoke(cli, ["run", paths["offers.csv"], *common, "--json"])
    assert first.exit_code == 0, first.output
    if not recorded:  # a workdir whose runs were before the ledger kept campaigns' names
        with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db, db:
            db.execute("DELETE FROM names")

    # WHEN a copy named Offers.csv is validated, then run, in the same workdir
    checked = CliRunner().invoke(cli, ["validate", paths["Offers.csv"], *common, "--json"])
    ran = CliRunner().invoke(cli, ["run", paths["Offers.csv"], *common])

    # THEN both refuse it as a usage error, saying why and the two ways on; nobody is mailed
    assert checked.exit_code == ran.exit_code == 2, (checked.output, ran.output)
    assert json.loads(checked.stdout)["earlier_runs"]["error"] == "NameLikeAnother"
    said = " ".join(ran.output.split())
    assert "'Offers.csv': a file named 'offers.csv' was run before" in said
    assert "run it as offers.csv (rename it)" in said
    assert "give it a name that differs by more than that" in said
    assert _in_outbox(workdir) == 18
    # AND a name that differs by more than case is a new campaign, as before (its letters,
    # the same as offers.csv's, sent again only on purpose)
    (tmp_path / "copy-1" / "Offers.csv").rename(tmp_path / "copy-1" / "offers-june.csv")
    june = [str(tmp_path / "copy-1" / "offers-june.csv"), *common, "--json"]
    other = CliRunner().invoke(cli, ["run", *june, "--send-again-from", "offers.csv"])
    assert (other.exit_code, json.loads(other.stdout)["counts"]["sent"]) == (0, 18)
