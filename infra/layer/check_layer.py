"""Fail a layer build that holds code for another platform than the functions run on.

`python3 check_layer.py LAYER/python` reads the wheel tags of every installed distribution
and the ELF header of every shared object, and exits 1 naming each one that is not for
Linux aarch64 (pure-Python wheels pass) or that needs a newer glibc than Lambda's Amazon
Linux 2023 has.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Lambda's python3.12 and python3.13 runtimes run on Amazon Linux 2023: glibc 2.34.
LAMBDA_GLIBC = (2, 34)
ELF_MACHINE_AARCH64 = 183
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)$")
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def platform_problem(platform_tag: str, arch: str = "aarch64") -> str | None:
    """Why a wheel's platform tag cannot run on Lambda's arch, or None if it can."""
    if platform_tag == "any":
        return None
    legacy_arch = platform_tag.split("_", 1)
    if legacy_arch[0] in _LEGACY and len(legacy_arch) == 2:
        glibc, tag_arch = _LEGACY[legacy_arch[0]], legacy_arch[1]
    else:
        match = _MANYLINUX.match(platform_tag)
        if match is None:
            return f"platform {platform_tag} is not manylinux"
        glibc, tag_arch = (int(match[1]), int(match[2])), match[3]
    if tag_arch != arch:
        return f"built for {tag_arch}, not {arch}"
    if glibc > LAMBDA_GLIBC:
        return f"needs glibc {glibc[0]}.{glibc[1]}, Lambda has {LAMBDA_GLIBC[0]}.{LAMBDA_GLIBC[1]}"
    return None


def wheel_problems(wheel_file: Path) -> list[str]:
    """Problems of one dist-info WHEEL file: a distribution passes if any of its tags fits."""
    platforms = [
        line.split(":", 1)[1].strip().rsplit("-", 1)[-1]
        for line in wheel_file.read_text(encoding="utf-8").splitlines()
        if line.startswith("Tag:")
    ]
    if not platforms:
        return [f"{wheel_file.parent.name}: no wheel tag"]
    reasons = [platform_problem(tag) for tag in platforms]
    if any(reason is None for reason in reasons):
        return []
    return [f"{wheel_file.parent.name}: {reasons[0]}"]


def elf_problem(shared_object: Path) -> str | None:
    """Why a shared object is not a 64-bit little-endian aarch64 ELF file, or None."""
    with shared_object.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return "not an ELF file"
    if header[4] != 2 or header[5] != 1:
        return "not 64-bit little-endian"
    machine = int.from_bytes(header[18:20], "little")
    if machine != ELF_MACHINE_AARCH64:
        return f"ELF machine {machine}, not aarch64 ({ELF_MACHINE_AARCH64})"
    return None


def layer_problems(site: Path) -> list[str]:
    problems: list[str] = []
    for wheel_file in sorted(site.glob("*.dist-info/WHEEL")):
        problems.extend(wheel_problems(wheel_file))
    for shared_object in sorted(site.rglob("*.so")):
        reason = elf_problem(shared_object)
        if reason is not None:
            problems.append(f"{shared_object.relative_to(site)}: {reason}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not Path(argv[1]).is_dir():
        print("usage: check_layer.py LAYER_DIR/python", file=sys.stderr)
        return 2
    site = Path(argv[1])
    problems = layer_problems(site)
    for problem in problems:
        print(f"check_layer: {problem}", file=sys.stderr)
    if problems:
        return 1
    count = len(list(site.glob("*.dist-info")))
    print(f"check_layer: {count} distributions, all pure Python or Linux aarch64")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
