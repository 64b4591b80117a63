"""`python -m bench` prints every figure, then the campaign's headline as its very last line."""

from __future__ import annotations

import types

import bench.__main__ as bench_main


def fake(figures: dict[str, str]) -> types.SimpleNamespace:
    return types.SimpleNamespace(run=lambda out_dir: dict(figures))


def test_the_headline_is_the_last_line_whatever_runs_after_the_campaign(monkeypatch, capsys):
    # GIVEN the campaign benchmark and another one that runs after it
    modules = {
        "bench.bench_campaign": fake(
            {
                "campaign_msgs_per_s": "1500",
                "mailmerge_ratio": "6.10",
                "floor_ratio": "0.40",
                "peak_rss_mb": "180",
            }
        ),
        "bench.bench_engine": fake({"engine_overhead_us": "50"}),
    }
    monkeypatch.setattr(bench_main.importlib, "import_module", modules.__getitem__)
    # WHEN both run
    assert bench_main.main(["campaign", "engine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # THEN the other figures come first and the headline is exactly the last line
    assert lines[-2] == "campaign_msgs_per_s=1500 engine_overhead_us=50"
    assert lines[-1] == "mailmerge_ratio=6.10 floor_ratio=0.40 peak_rss_mb=180"


def test_without_the_campaign_the_figures_are_the_last_line(monkeypatch, capsys):
    monkeypatch.setattr(
        bench_main.importlib, "import_module", {"bench.bench_engine": fake({"a": "1"})}.__getitem__
    )
    assert bench_main.main(["engine"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "a=1"
