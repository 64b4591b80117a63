"""The local engine's registry: which function modules a local run loads."""

from __future__ import annotations

import json
import subprocess
import sys

from mailmatrix.local import REPO

PROBE = """
import json, sys
from pathlib import Path
from mailmatrix.local import Workdir, build_registry
registry = build_registry(Workdir(Path(sys.argv[1])))
print(json.dumps({
    "registered": sorted(registry.lambdas),
    "loaded": sorted(m for m in sys.modules if m.startswith("functions.") and m.endswith(".app")),
    "boto3": "boto3" in sys.modules,
}))
"""


def test_a_local_run_loads_only_the_state_machines_functions_and_no_boto3(tmp_path):
    # WHEN the local engine's registry is built in a fresh interpreter
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(probe.stdout)

    # THEN every function of the template is registered (any may be invoked by name)
    assert {"ValidateFunction", "SendBatchFunction", "SummarizeFunction", "AlertFunction"} <= set(
        found["registered"]
    )
    # AND only the state machine's are loaded up front, the ones its forked workers need;
    # boto3 (~25 MB in the engine and in each worker) is not, as a local run never calls AWS
    assert found["loaded"] == [
        "functions.send_batch.app",
        "functions.summarize.app",
        "functions.validate.app",
    ]
    assert found["boto3"] is False
