"""checkov on the transformed template: no failed check, and every skip explains itself.

checkov pins an old boto3, so it lives in its own virtual environment: run
``bash infra/install-checkov.sh`` once (it creates .venv/checkov). Without it this test is
skipped and says so.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from infra_support import ROOT

CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"


def scan(path) -> dict:
    """Run checkov offline on ``path`` and return its JSON report."""
    env = dict(os.environ)
    # Nothing may leave the machine: no Prisma Cloud download, and any request that checkov
    # would still make goes to a closed loopback port.
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    env.update(BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    completed = subprocess.run(
        [
            str(CHECKOV),
            "-f",
            str(path),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
            "--compact",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    return json.loads(completed.stdout)


@pytest.mark.skipif(
    not CHECKOV.exists(), reason="checkov not installed: bash infra/install-checkov.sh"
)
def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason(transformed, transformed_file):
    report = scan(transformed_file)
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50

    for check in report["results"]["skipped_checks"]:
        name = check["resource"].split(".", 1)[1]
        skips = transformed["Resources"][name]["Metadata"]["checkov"]["skip"]
        (skip,) = [s for s in skips if s["id"] == check["check_id"]]
        assert len(skip.get("comment", "")) >= 40, f"{check['check_id']} on {name}: say why"
