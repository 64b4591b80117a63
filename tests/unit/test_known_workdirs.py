"""The record of known workdirs: kept in the state folder, with the record an earlier build
kept in the default workdir merged in (each workdir's servers, the larger sent mark)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mailmatrix import local

ONE, TWO = "smtp://one.example:25", "smtp://two.example:25"
NOW = {"workdirs": {"/a": {"c": [ONE]}}, "sent": {"/a": {"c": 7}, "/b": {"c": 2}}}
EARLIER = {
    "workdirs": {"/a": {"c": [TWO]}, "/b": {"d": [ONE]}},
    "sent": {"/a": {"c": 5}, "/b": {"c": 9}},
}
MERGED = {
    "workdirs": {"/a": {"c": [ONE, TWO]}, "/b": {"d": [ONE]}},
    "sent": {"/a": {"c": 7}, "/b": {"c": 9}},
}


@pytest.fixture
def earlier(monkeypatch, tmp_path, state_dir: Path) -> Path:
    """The record now in the state folder (NOW), and an earlier build's in the default
    workdir (EARLIER)."""
    default = tmp_path / "default"
    default.mkdir()
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))
    state_dir.mkdir()
    (state_dir / local.KNOWN_WORKDIRS).write_text(json.dumps(NOW))
    (default / local.KNOWN_WORKDIRS).write_text(json.dumps(EARLIER))
    return default / local.KNOWN_WORKDIRS


def _kept(known: local.KnownWorkdirs) -> dict:
    return {"workdirs": known.workdirs, "sent": known.sent}


def test_an_earlier_record_is_merged_once_and_merging_it_again_lowers_nothing(
    earlier: Path, state_dir: Path
):
    # WHEN a run through a server takes the record
    with local._known_locked() as known:
        # THEN it holds both: every server of each workdir, and the larger mark of each
        assert _kept(known) == MERGED
    assert json.loads((state_dir / local.KNOWN_WORKDIRS).read_text()) == MERGED
    # AND the earlier record is renamed, not merged again, and left to read
    merged = earlier.with_name(local.KNOWN_WORKDIRS + local.MERGED_SUFFIX)
    assert not earlier.exists() and json.loads(merged.read_text()) == EARLIER

    # WHEN the default workdir is put back from a backup that held it, after a run raised a
    # mark, and the record is taken again
    with local._known_locked() as known:
        known.mark_sent("/b", "c", 12)
    shutil.copy(merged, earlier)
    with local._known_locked() as known:
        # THEN it is merged again, and lowers no mark
        assert known.sent == {"/a": {"c": 7}, "/b": {"c": 12}}
        assert known.workdirs == MERGED["workdirs"]


def test_an_earlier_record_that_cannot_be_renamed_is_merged_again_each_time(
    earlier: Path, monkeypatch
):
    # GIVEN a default workdir where the earlier record cannot be renamed (a read-only one)
    def refused(self, target):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "replace", refused)

    # WHEN the record is taken twice, a mark raised between
    with local._known_locked() as known:
        assert _kept(known) == MERGED
        known.mark_sent("/a", "c", 20)
    with local._known_locked() as known:
        # THEN the run goes on, the earlier record merged again, lowering nothing
        assert known.sent == {"/a": {"c": 20}, "/b": {"c": 9}}
        assert known.workdirs == MERGED["workdirs"]
    assert json.loads(earlier.read_text()) == EARLIER


def test_parts_of_the_record_this_version_does_not_know_are_kept_when_it_is_written(
    earlier: Path, state_dir: Path
):
    # GIVEN records with parts a later version wrote, one of them in both (the state
    # folder's wins)
    record = state_dir / local.KNOWN_WORKDIRS
    record.write_text(json.dumps({**NOW, "version": 3, "moves": {"/a": "/c"}}))
    earlier.write_text(json.dumps({**EARLIER, "version": 2, "holds": ["/b"]}))

    # WHEN a run through a server takes the record and raises a mark
    with local._known_locked() as known:
        known.mark_sent("/a", "c", 8)

    # THEN the record written keeps them as they were, beside what this version keeps
    assert json.loads(record.read_text()) == {
        "workdirs": MERGED["workdirs"],
        "sent": {"/a": {"c": 8}, "/b": {"c": 9}},
        "version": 3,
        "moves": {"/a": "/c"},
        "holds": ["/b"],
    }


def test_commands_that_only_look_see_an_earlier_record_and_write_nothing(
    monkeypatch, tmp_path, state_dir: Path
):
    # GIVEN no record in the state folder yet, and an earlier build's in the default workdir
    default = tmp_path / "default"
    default.mkdir()
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))
    (default / local.KNOWN_WORKDIRS).write_text(json.dumps(EARLIER))

    # WHEN validate or show reads the record
    known = local._read_record()

    # THEN they see its marks, and nothing is made or renamed
    assert _kept(known) == EARLIER
    assert not state_dir.exists()
    assert sorted(path.name for path in default.iterdir()) == [local.KNOWN_WORKDIRS]


def test_a_state_folder_inside_a_workdir_the_record_names_is_refused(monkeypatch, tmp_path):
    from mailmatrix.errors import StateFolderUnsafe

    # GIVEN the record kept in a folder inside a workdir it names (put back from a backup,
    # that workdir would take the record back with it)
    workdir = tmp_path / "earlier-workdir"
    state = workdir / "state"
    state.mkdir(parents=True)
    monkeypatch.setenv("MAILMATRIX_STATE_DIR", str(state))
    kept = json.dumps({"workdirs": {str(workdir): {"c": [ONE]}}, "sent": {}})
    (state / local.KNOWN_WORKDIRS).write_text(kept)

    # WHEN a run from another workdir takes the record THEN it is refused, and the record is
    # left as it was
    refused = pytest.raises(StateFolderUnsafe, match=f"is inside the workdir {workdir}[.]")
    with refused, local._known_locked(tmp_path / "another"):
        pass
    assert (state / local.KNOWN_WORKDIRS).read_text() == kept
