"""infra/deploy.sh: without the SAM CLI it stops at once and says how to get it; the bundled
(demo) templates go to the bucket on the first deploy only."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
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


def _deploy(script, path: str, home) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``path`` as PATH (the stand-ins for sam and aws first)."""
    return subprocess.run(
        [shutil.which("bash"), str(script)],
        env={"PATH": path, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _stub(folder, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize(("held", "synced"), [("0", True), ("1", False)], ids=["first", "again"])
def test_a_deploy_puts_the_demo_templates_in_the_bucket_only_when_it_holds_none(
    tmp_path, held, synced
):
    # GIVEN stand-ins for sam and aws (nothing leaves this machine): the bucket's templates/
    # holds ``held`` objects; every aws call is logged
    calls = tmp_path / "aws-calls"
    _stub(tmp_path, "sam", "exit 0")
    _stub(
        tmp_path,
        "aws",
        f'echo "$*" >> {calls}\n'
        'case "$1 $2" in\n'
        '  "cloudformation describe-stacks") echo the-bucket ;;\n'
        f'  "s3api list-objects-v2") echo {held} ;;\n'
        "esac",
    )
    path = f"{tmp_path}:{os.path.dirname(shutil.which('sed'))}"

    # WHEN the stack is deployed
    completed = _deploy(INFRA / "deploy.sh", path, tmp_path)

    # THEN the bundled (demo) templates are synced on the first deploy only: a redeploy
    # leaves the operator's own letters as they are, and says how to replace them
    assert completed.returncode == 0, completed.stderr
    logged = calls.read_text()
    assert ("s3 sync ../templates/ s3://the-bucket/templates/ --delete" in logged) is synced
    assert "aws s3 sync YOUR-TEMPLATES-FOLDER/ s3://the-bucket/templates/ --delete" in (
        completed.stdout
    )
    assert ("are left as they are" in completed.stdout) is not synced


@pytest.mark.parametrize(("length", "deployed"), [(69, True), (70, False)], ids=["69", "70"])
def test_a_stack_name_too_long_for_the_state_machine_s_name_deploys_nothing(
    tmp_path, length, deployed
):
    # GIVEN the script beside a samconfig.toml naming a stack of ``length`` characters, and
    # stand-ins for sam and aws that log their calls
    folder = tmp_path / "infra"
    folder.mkdir()
    shutil.copy(INFRA / "deploy.sh", folder / "deploy.sh")
    name = "s" * length
    (folder / "samconfig.toml").write_text(f'[default.deploy.parameters]\nstack_name = "{name}"\n')
    calls = tmp_path / "calls"
    _stub(tmp_path, "sam", f'echo "sam $*" >> {calls}')
    _stub(tmp_path, "aws", f'echo "aws $*" >> {calls}\necho 1')
    path = f"{tmp_path}:{os.path.dirname(shutil.which('sed'))}"

    # WHEN it deploys
    completed = _deploy(folder / "deploy.sh", path, tmp_path)

    # THEN a name of 69 characters deploys (mailmatrix-NAME is 80, Step Functions' limit);
    # one of 70 stops before anything is built, saying why and what to do
    logged = calls.read_text() if calls.exists() else ""
    assert ("sam deploy" in logged) is deployed
    if deployed:
        assert completed.returncode == 0, completed.stderr
        return
    assert completed.returncode == 2
    assert logged == ""
    said = " ".join(completed.stderr.split())
    assert "is 70 characters long: at most 69 are taken" in said
    assert "Nothing was built or deployed: give the stack a shorter name" in said


def test_the_longest_stack_name_deploy_takes_fits_the_state_machine_s_name(sam_template):
    # The state machine's name, 80 characters at most in Step Functions
    machine = sam_template["Resources"]["MailMatrixStateMachine"]["Properties"]["Name"]
    assert machine == {"Fn::Sub": "mailmatrix-${AWS::StackName}"}
    assert len("mailmatrix-") + 69 == 80
    assert "longest=69" in (INFRA / "deploy.sh").read_text()
