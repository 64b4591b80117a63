"""Where the campaign bench's contenders write, and its file-making probe."""

from __future__ import annotations

import pytest

from bench import bench_campaign


def test_outputs_go_to_tmpfs_with_room_else_to_the_bench_folder(tmp_path, monkeypatch):
    shm, out = tmp_path / "shm", tmp_path / "out"
    shm.mkdir()
    monkeypatch.setattr(bench_campaign, "TMPFS", shm)
    monkeypatch.delenv("MAILMATRIX_BENCH_OUTPUT", raising=False)

    monkeypatch.setattr(bench_campaign, "OUTPUT_ROOM", 1)
    assert bench_campaign.output_root(out) == shm

    monkeypatch.setattr(bench_campaign, "OUTPUT_ROOM", 1 << 62)  # more than any disk has
    assert bench_campaign.output_root(out) == out

    monkeypatch.setattr(bench_campaign, "TMPFS", tmp_path / "none")
    monkeypatch.setattr(bench_campaign, "OUTPUT_ROOM", 1)
    assert bench_campaign.output_root(out) == out


@pytest.mark.parametrize(("chosen", "expected"), [("disk", "out"), ("elsewhere", "elsewhere")])
def test_the_outputs_folder_can_be_chosen(tmp_path, monkeypatch, chosen, expected):
    monkeypatch.setattr(bench_campaign, "OUTPUT_ROOM", 1)
    value = chosen if chosen == "disk" else str(tmp_path / chosen)
    monkeypatch.setenv("MAILMATRIX_BENCH_OUTPUT", value)
    assert bench_campaign.output_root(tmp_path / "out") == tmp_path / expected


def test_the_file_making_probe_counts_its_cpu_and_leaves_nothing(tmp_path):
    spent = bench_campaign.file_making(tmp_path / "probe", 200, 4096)
    assert spent > 0
    assert not (tmp_path / "probe").exists()
