"""infra/deploy.sh: without the SAM CLI it stops at once and says how to get it."""

from __future__ import annotations

import shutil
import subprocess

from infra_support import INFRA


def test_deploy_without_sam_cli_explains_how_to_install_it(tmp_path):
    bash = shutil.which("bash")
    completed = subprocess.run(
        [bash, str(INFRA / "deploy.sh")],
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},  # an empty PATH: no sam, no aws
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "AWS SAM CLI is not installed" in completed.stderr
    assert "pipx install aws-sam-cli" in completed.stderr
    assert completed.stdout == ""


def test_deploy_script_is_valid_bash():
    completed = subprocess.run(
        [shutil.which("bash"), "-n", str(INFRA / "deploy.sh")], capture_output=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
