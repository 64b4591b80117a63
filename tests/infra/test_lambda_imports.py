"""Each function loads as Lambda loads it, on the interpreter running the tests.

Lambda runs the functions on Python 3.12 (`make test-pythons` runs this on 3.12 and 3.13):
it imports ``app`` from the function's folder in a fresh interpreter, with only the layer
beside it, which holds MailMatrix and its runtime dependencies, none of the development ones.
The rest of the suite imports the handlers as ``functions.<name>.app`` in a process that has
pytest, moto and the rest loaded already, so it would not see an import that fails there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
from infra_support import ROOT

FOLDERS = ["validate", "send_batch", "summarize", "ses_events", "alert"]

# What a handler also imports on AWS once invoked (wiring.py picks them by settings).
AWS_ADAPTERS = [
    "mailmatrix.adapters.storage_s3",
    "mailmatrix.adapters.mailer_ses",
    "mailmatrix.adapters.ledger_dynamodb",
    "mailmatrix.adapters.ses_account",
]

# Run in the function's folder, as Lambda runs it, with the modules of every distribution that
# is not in the layer (argv[1], JSON) made impossible to import: the handler's import and the
# AWS adapters' must succeed; optional imports (botocore's of certifi) take their fallbacks.
PROBE = """
import importlib, json, sys

class NotInTheLayer:
    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not in the layer)")
        return None

sys.meta_path.insert(0, NotInTheLayer(json.loads(sys.argv[1])))
import app
assert callable(app.handler), "app.handler is not callable"
for name in sys.argv[2:]:
    importlib.import_module(name)
"""


def _name(requirement: str) -> str:
    """The distribution a requirement names, normalised (PEP 503)."""
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found[0]).lower()


def runtime_distributions() -> set[str]:
    """MailMatrix and what it needs at run time, without extras: what the layer holds."""
    wanted, seen = ["mailmatrix"], set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in metadata.requires(name) or []:
            if "extra ==" not in requirement:  # a development extra's, not the layer's
                wanted.append(_name(requirement))
    return seen


def not_in_the_layer() -> list[str]:
    """The top-level modules that only distributions outside the layer provide."""
    allowed = runtime_distributions()
    return sorted(
        module
        for module, providers in metadata.packages_distributions().items()
        if not {_name(provider) for provider in providers} & allowed
    )


def test_the_probe_refuses_what_the_layer_lacks():
    # The check below can fail: a development dependency cannot be imported in the probe.
    blocked = not_in_the_layer()
    assert {"moto", "pytest", "aiosmtpd"} <= set(blocked)
    assert not {"boto3", "jinja2", "aws_lambda_powertools"} & set(blocked)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.replace("import app", "import moto"), json.dumps(blocked)],
        cwd=ROOT / "functions" / "validate",
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 1
    assert "No module named 'moto' (not in the layer)" in probe.stderr


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_function_loads_from_its_folder_with_the_layer_only(folder):
    # GIVEN a fresh interpreter in the function's folder (Lambda's /var/task), which cannot
    # import what the layer lacks
    # WHEN it imports app, as Handler: app.handler says, and the adapters used on AWS
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(not_in_the_layer()), *AWS_ADAPTERS],
        cwd=ROOT / "functions" / folder,
        capture_output=True,
        text=True,
        check=False,
    )

    # THEN both load
    assert probe.returncode == 0, probe.stderr
