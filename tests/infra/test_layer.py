"""The Lambda layer is built for the functions' architecture, and a wrong build is refused.

The real build has pip fetch aarch64 wheels from PyPI, and tests send traffic only to
loopback, so these tests read what the Makefile would run and give check_layer.py layers
made up on disk.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from infra_support import INFRA, ROOT

spec = importlib.util.spec_from_file_location("check_layer", INFRA / "layer" / "check_layer.py")
assert spec is not None and spec.loader is not None
check_layer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_layer)


def test_functions_and_layer_are_arm64(transformed, sam_template):
    for name, resource in transformed["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            assert resource["Properties"]["Architectures"] == ["arm64"], name
    layer = sam_template["Resources"]["MailMatrixLayer"]
    assert layer["Metadata"]["BuildArchitecture"] == "arm64"
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def _dry_run_of_layer_build(tmp_path: Path) -> str:
    completed = subprocess.run(
        [
            shutil.which("make") or "make",
            "-n",
            "-s",
            "-C",
            str(INFRA / "layer"),
            "build-MailMatrixLayer",
            f"ARTIFACTS_DIR={tmp_path / 'artifacts'}",
            f"MAILMATRIX_ROOT={ROOT}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return completed.stdout


def test_layer_build_asks_pip_for_aarch64_wheels_only_and_checks_the_result(tmp_path):
    commands = _dry_run_of_layer_build(tmp_path)
    platforms = re.findall(r"--platform (\S+)", commands)
    assert platforms, commands
    assert all(check_layer.platform_problem(tag) is None for tag in platforms), platforms
    assert "--only-binary=:all:" in commands
    assert "--python-version 3.12" in commands
    assert "constraints.txt" in commands
    assert re.search(r"check_layer\.py\"? \"?\S*artifacts/python", commands), commands
    assert "--no-compile" in commands  # this machine's bytecode is not Lambda's


def test_layer_build_without_artifacts_dir_stops_before_writing_anywhere():
    completed = subprocess.run(
        [shutil.which("make") or "make", "-n", "-C", str(INFRA / "layer"), "build-MailMatrixLayer"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert completed.returncode != 0
    assert "ARTIFACTS_DIR is not set" in completed.stderr
    assert "pip" not in completed.stdout


def test_sam_build_does_not_reuse_a_cached_layer():
    # sam keys a layer's build cache on its ContentUri (infra/layer/) only: a cached build
    # would ship the mailmatrix code of an earlier build.
    config = tomllib.loads((INFRA / "samconfig.toml").read_text(encoding="utf-8"))
    # (said so, not left to sam's default: the docs say samconfig.toml turns it off)
    assert config["default"]["build"]["parameters"]["cached"] is False


@pytest.mark.parametrize(
    ("tag", "problem"),
    [
        ("any", None),
        ("manylinux2014_aarch64", None),
        ("manylinux_2_24_aarch64", None),
        ("manylinux_2_34_aarch64", None),
        ("manylinux_2_35_aarch64", "needs glibc 2.35"),
        ("manylinux2014_x86_64", "built for x86_64"),
        ("manylinux_2_17_x86_64", "built for x86_64"),
        ("musllinux_1_2_aarch64", "not manylinux"),
        ("macosx_11_0_arm64", "not manylinux"),
    ],
)
def test_platform_tags(tag, problem):
    found = check_layer.platform_problem(tag)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def _elf(machine: int) -> bytes:
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4] = 2  # 64-bit
    header[5] = 1  # little-endian
    header[18:20] = machine.to_bytes(2, "little")
    return bytes(header)


def _distribution(site: Path, name: str, tags: list[str], shared_object: bytes | None) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Wheel-Version: 1.0", "Root-Is-Purelib: false", *(f"Tag: {t}" for t in tags)]
    (info / "WHEEL").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if shared_object is not None:
        (site / name).mkdir()
        (site / name / f"_{name}.abi3.so").write_bytes(shared_object)


def test_a_layer_of_aarch64_and_pure_wheels_passes(tmp_path, capsys):
    site = tmp_path / "python"
    _distribution(site, "fast", ["cp310-abi3-manylinux_2_24_aarch64"], _elf(183))
    _distribution(
        site,
        "several",
        ["cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-manylinux2014_aarch64"],
        _elf(183),
    )
    _distribution(site, "pure", ["py3-none-any"], None)
    assert check_layer.main(["check_layer.py", str(site)]) == 0
    assert "3 distributions" in capsys.readouterr().out


def test_a_layer_with_an_x86_wheel_or_object_fails_naming_it(tmp_path, capsys):
    site = tmp_path / "python"
    _distribution(site, "good", ["cp310-abi3-manylinux_2_24_aarch64"], _elf(183))
    _distribution(site, "wrongtag", ["cp312-cp312-manylinux2014_x86_64"], None)
    _distribution(site, "wrongso", ["py3-none-any"], _elf(62))
    _distribution(site, "notelf", ["py3-none-any"], b"#!/bin/sh\n")
    assert check_layer.main(["check_layer.py", str(site)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3
    assert "wrongtag-1.0.dist-info: built for x86_64" in errors[0]
    assert "_notelf.abi3.so: not an ELF file" in errors[1]
    assert "_wrongso.abi3.so: ELF machine 62" in errors[2]


def test_checker_without_a_folder_is_a_usage_error(tmp_path):
    assert check_layer.main(["check_layer.py", str(tmp_path / "absent")]) == 2
