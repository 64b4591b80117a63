"""Run every benchmark module (bench/bench_*.py) in one process run, side by side.

Each module defines ``run(out_dir: pathlib.Path) -> dict[str, str]``: it prints its own
figures and returns the machine-readable ones, which are printed together at the end.
``python -m bench NAME ...`` runs only the named modules (e.g. ``python -m bench engine``).
"""

from __future__ import annotations

import compileall
import importlib
import pathlib
import sys
import tempfile

HEADLINE = ("mailmerge_ratio", "floor_ratio", "peak_rss_mb")  # the last line, in this order


def main(argv: list[str]) -> int:
    """Run the selected benchmarks and print their figures."""
    here = pathlib.Path(__file__).parent
    names = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    wanted = argv or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        return 2
    compile_sources(here.parent)
    figures: dict[str, str] = {}
    for name in wanted:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        with tempfile.TemporaryDirectory(prefix=f"mm-bench-{name}-") as out:
            figures.update(module.run(pathlib.Path(out)) or {})
    headline = {k: figures.pop(k) for k in HEADLINE if k in figures}
    if figures:
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
    if headline:
        print(" ".join(f"{k}={v}" for k, v in headline.items()))
    return 0


def compile_sources(repo: pathlib.Path) -> None:
    """Write the bytecode of MailMatrix's modules before anything is timed.

    pip compiles an installed package's modules (mailmerge's among them); an editable install
    compiles none. Where PYTHONDONTWRITEBYTECODE is set, Python then compiled MailMatrix's
    source again in every measured run: about 0.1 s of CPU at start-up, before the workers
    have anything to do. compileall writes the files whatever that variable says, and only
    those older than their source.
    """
    for package in ("mailmatrix", "functions"):
        compileall.compile_dir(repo / package, quiet=1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
