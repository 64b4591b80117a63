"""Score the example campaign's messages with SpamAssassin (local tests only, no network).

Used by `make mailcheck` through tools/mailcheck.sh, which installs SpamAssassin first.
The messages come from `mailmatrix run examples/offer-letters/recipients.csv` (the Maildir
outbox of a scratch workdir); two more are rendered directly with a List-Unsubscribe header,
since the demo campaign does not configure one. Each message's score and fired rules are
printed. Exit status 1 when a rule about MIME structure, headers, encoding or missing parts
fires, or a score reaches 1.0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "offer-letters"
MAX_SCORE = 1.0
# Rules about MIME structure, headers, encodings and missing parts (SpamAssassin 4 names).
FORBIDDEN = re.compile(
    r"^(MIME_|MISSING_|HEADER_|HDR_|MPART_|CTYPE_|CHARSET_|BAD_ENC|PP_MIME|TVD_|INVALID_|"
    r"DATE_|MSGID_|FROM_|TO_|SUBJ_|SUBJECT_|HTML_MIME_|HTML_TAG_|HTML_BADTAG|HTML_SHORT|"
    r"HTML_IMAGE|HTML_FONT|HTML_OBFUSCATE|EMPTY_|NO_DNS_FOR|RDNS_|__MIME|.*_ENCODED|"
    r".*_8BIT|.*BASE64|.*_QP_|.*UNPARSEABLE|.*MALFORMED|.*_NO_TEXT|.*NOTEXT)"
)
_RULE_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


@dataclass
class Score:
    """One message's verdict."""

    path: Path
    label: str
    score: float
    rules: list[tuple[float, str, str]]

    @property
    def forbidden(self) -> list[str]:
        """Fired rules about MIME, headers or encodings."""
        return [name for _, name, _ in self.rules if FORBIDDEN.match(name)]

    @property
    def ok(self) -> bool:
        """No forbidden rule and a score below the limit."""
        return not self.forbidden and self.score < MAX_SCORE


def campaign_messages(workdir: Path) -> list[Path]:
    """Run the demo campaign into a scratch workdir and return the outbox's messages."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        str(Path(sys.executable).with_name("mailmatrix")),
        "run",
        str(EXAMPLE / "recipients.csv"),
        "--workdir",
        str(workdir),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    outbox = workdir / "outbox" / "new"
    messages = sorted(outbox.iterdir()) if outbox.is_dir() else []
    print(f"mailmatrix run: exit {result.returncode}, {len(messages)} messages in the outbox")
    if not messages:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
    return messages


def unsubscribe_messages(folder: Path) -> list[Path]:
    """Render the first offer and rejection rows directly, with List-Unsubscribe headers."""
    from mailmatrix.cli.validate_cmd import folder_index, load_folder_catalog
    from mailmatrix.core.message import build_message, message_bytes
    from mailmatrix.core.recipients import validate_recipients

    catalog = load_folder_catalog(REPO / "templates")
    items: dict[str, dict] = {}

    def keep(item: dict) -> None:
        items.setdefault(item["template"], item)

    with (EXAMPLE / "recipients.csv").open("rb") as stream:
        validate_recipients(
            stream,
            source="recipients.csv",
            catalog=catalog,
            attachments=folder_index(EXAMPLE / "attachments"),
            emit=keep,
        )
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for template, item in sorted(items.items()):
        attachment = None
        if item.get("attachment"):
            data = (EXAMPLE / "attachments" / item["attachment"]).read_bytes()
            attachment = (item["attachment"], data)
        msg = build_message(
            sender=catalog.sender or "Acme Talent <talent@example.com>",
            to_name=item["name"],
            to_email=item["email"],
            rendered=catalog.render(template, item["fields"]),
            attachment=attachment,
            unsubscribe=["https://example.com/unsubscribe?c=demo", "mailto:talent@example.com"],
        )
        path = folder / f"unsubscribe-{template}.eml"
        path.write_bytes(message_bytes(msg))
        paths.append(path)
    return paths


def score(path: Path, home: Path) -> Score:
    """Run `spamassassin -L -t` on one message and read its report."""
    raw = path.read_bytes()
    result = subprocess.run(
        ["spamassassin", "-L", "-t"],
        input=raw,
        capture_output=True,
        timeout=300,
        env={**os.environ, "HOME": str(home)},
        check=True,
    )
    output = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", output, re.MULTILINE)
    if status is None:
        raise RuntimeError(f"{path.name}: no X-Spam-Status in SpamAssassin's output")
    rules = []
    in_table = False
    for line in output.splitlines():
        if line.startswith("---- ----"):
            in_table = True
            continue
        if in_table:
            match = _RULE_LINE.match(line)
            if match:
                rules.append((float(match[1]), match[2], match[3].strip()))
            elif not line.strip():
                break
    parsed = message_from_bytes(raw, policy=email_policy.default)
    label = f"{path.name[:24]}  {parsed['Subject']}"
    return Score(path=path, label=label, score=float(status[1]), rules=rules)


def main(argv: list[str]) -> int:
    """Render, score and judge the example campaign's messages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    args = parser.parse_args(argv)
    if shutil.which("spamassassin") is None:
        print("spamassassin is not installed (tools/mailcheck.sh installs it)", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="mailmatrix-mailcheck-"))
    try:
        (scratch / "home").mkdir()
        messages = campaign_messages(scratch / "work")
        messages += unsubscribe_messages(scratch / "extra")
        if len(messages) < 3:
            print("mailcheck: the campaign produced no messages to score", file=sys.stderr)
            return 1
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            scores = list(pool.map(lambda p: score(p, scratch / "home"), messages))
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    failed = 0
    for result in scores:
        verdict = "ok" if result.ok else "FAIL"
        failed += not result.ok
        fired = ", ".join(f"{name}({points:g})" for points, name, _ in result.rules) or "none"
        print(f"{verdict:4} score {result.score:5.1f}  {result.label}")
        print(f"     rules: {fired}")
        for name in result.forbidden:
            description = next(d for _, n, d in result.rules if n == name)
            print(f"     forbidden rule {name}: {description}")
    print(
        f"mailcheck: {len(scores) - failed} of {len(scores)} messages clean "
        f"(no MIME/header/encoding rule, score < {MAX_SCORE})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
