"""The campaign bench's CPU figure: the contender's own process tree, nothing else."""

from __future__ import annotations

import sys

from bench import bench_campaign

# A parent that spends ~0.3 s of CPU in a child it waits for, then sleeps as long.
_BUSY_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.run([sys.executable, '-c', "
    "'import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass']); "
    "time.sleep(0.3)"
)


def test_cpu_counts_the_childs_grandchildren_and_not_its_sleep(tmp_path):
    busy = bench_campaign.measured([sys.executable, "-c", _BUSY_CHILD], stdout=tmp_path / "a")
    idle = bench_campaign.measured(
        [sys.executable, "-c", "import time; time.sleep(0.6)"], stdout=tmp_path / "b"
    )
    assert busy["cpu_s"] >= 0.3
    assert idle["cpu_s"] < busy["cpu_s"] - 0.2
    assert idle["seconds"] >= 0.6 > idle["cpu_s"]
