"""`python -m bench` prints every figure, then the campaign's headline as its very last line."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import pytest

import bench.__main__ as bench_main

COMPILE_SOURCES = bench_main.compile_sources  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def compiled(monkeypatch) -> list[object]:
    """compile_sources, recorded instead of run: these tests do not write into the tree."""
    calls: list[object] = []
    monkeypatch.setattr(bench_main, "compile_sources", calls.append)
    return calls


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


def test_the_sources_are_compiled_before_any_benchmark_runs(monkeypatch, compiled):
    # GIVEN a benchmark that notes whether the sources were compiled when it ran
    seen: list[int] = []
    module = types.SimpleNamespace(run=lambda out_dir: seen.append(len(compiled)) or {})
    monkeypatch.setattr(
        bench_main.importlib, "import_module", {"bench.bench_engine": module}.__getitem__
    )
    # WHEN it runs
    assert bench_main.main(["engine"]) == 0
    # THEN the repository's sources were compiled once, before it
    assert seen == [1]
    assert compiled == [pathlib.Path(bench_main.__file__).parent.parent]


def test_compile_sources_writes_bytecode_even_where_python_writes_none(tmp_path, monkeypatch):
    # GIVEN a package's module and Python told not to write bytecode
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "mailmatrix").mkdir()
    module = tmp_path / "mailmatrix" / "m.py"
    module.write_text("X = 1\n")
    # WHEN the bench compiles the sources
    COMPILE_SOURCES(tmp_path)
    # THEN the module's bytecode is where Python looks for it
    assert pathlib.Path(importlib.util.cache_from_source(str(module))).is_file()
