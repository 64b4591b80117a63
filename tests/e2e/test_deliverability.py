"""`--check-deliverability` against a DNS server of the test's own, on loopback.

The check is email-validator's: it asks DNS for each domain's MX (then A/AAAA) records through
dnspython's default resolver. The tests point that resolver at a small server on 127.0.0.1 that
knows four domains, so no query leaves the machine.
"""

from __future__ import annotations

import csv
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.resolver
import dns.rrset
import pytest
from click.testing import CliRunner

from mailmatrix.cli import exits
from mailmatrix.cli.main import cli
from mailmatrix.core import addresses

# What the test's DNS server answers, by domain: MX records, A records, or no such domain.
MAIL = "hr-mail.com"  # has an MX record
HOST_ONLY = "host-only.com"  # no MX, an A record: mail goes to the host itself (RFC 5321)
NULL_MX = "no-mail.com"  # "MX 0 ." (RFC 7505): takes no mail
GONE = "gone-away.com"  # NXDOMAIN


def _answer(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text().rstrip(".")
    kind = dns.rdatatype.to_text(question.rdtype)
    records = {
        (MAIL, "MX"): "10 mx.hr-mail.com.",
        (NULL_MX, "MX"): "0 .",
        (HOST_ONLY, "A"): "1.2.3.4",  # an answer only: nothing connects to it
    }
    if name == GONE or name not in (MAIL, NULL_MX, HOST_ONLY):
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif (name, kind) in records:
        response.answer.append(
            dns.rrset.from_text(question.name, 60, "IN", kind, records[(name, kind)])
        )
    return response  # the name exists without records of that kind: NOERROR, no answer


@pytest.fixture
def dns_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A DNS server on loopback as dnspython's default resolver; yields the names asked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    asked: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            asked.append(query.question[0].name.to_text().rstrip("."))
            sock.sendto(_answer(query).to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = sock.getsockname()[1]
    monkeypatch.setattr(dns.resolver, "default_resolver", resolver)
    addresses._check_domain.cache_clear()  # earlier tests' answers were without DNS
    try:
        yield asked
    finally:
        stop.set()
        thread.join()
        sock.close()
        addresses._check_domain.cache_clear()


def _campaign(tmp_path: Path) -> tuple[Path, list[str]]:
    """A file of five rows (two at one domain) and templates without attachments; returns
    the file and the options that name the templates."""
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "subject.txt").write_text("Hello {{ Name }}")
    (templates / "body.txt").write_text("Dear {{ Name }},\nthank you.\n")
    letters = tmp_path / "letters.csv"
    with letters.open("w", newline="", encoding="utf-8") as stream:
        out = csv.writer(stream)
        out.writerow(["Email", "Name"])
        for number, domain in enumerate((MAIL, HOST_ONLY, NULL_MX, GONE, MAIL)):
            out.writerow([f"person{number}@{domain}", f"Person {number}"])
    return letters, ["--templates", str(templates)]


def test_validate_checks_each_domain_in_dns_once(tmp_path: Path, dns_server: list[str]) -> None:
    # GIVEN rows at a domain with MX, one with only an A record, a null MX, and a gone one
    letters, options = _campaign(tmp_path)
    rejects = tmp_path / "rejects.csv"

    # WHEN the file is validated with --check-deliverability
    result = CliRunner().invoke(
        cli,
        [
            *("validate", str(letters), *options, "--sender", "hr@example.com"),
            *("--check-deliverability", "--rejects", str(rejects)),
        ],
    )

    # THEN the null-MX and the gone domains' rows are rejected, each with DNS's reason
    assert result.exit_code == exits.ROWS_REJECTED, result.output
    with rejects.open(encoding="utf-8-sig", newline="") as stream:
        rejected = {line["row"]: line["reason"] for line in csv.DictReader(stream)}
    assert sorted(rejected) == ["4", "5"]
    assert "does not accept email" in rejected["4"]
    assert "does not exist" in rejected["5"]
    # AND the other three are valid, and DNS was asked about each domain once (row 6 is the
    # same domain as row 2)
    assert "│    5 │     3 │        2 │" in result.output
    assert sorted(set(dns_server)) == sorted({MAIL, HOST_ONLY, NULL_MX, GONE})
    assert dns_server.count(MAIL) == 1


def test_validate_without_the_option_asks_no_dns(tmp_path: Path, dns_server: list[str]) -> None:
    letters, options = _campaign(tmp_path)
    sender = ["--sender", "hr@example.com"]  # the templates name none: as `run` is given one
    result = CliRunner().invoke(cli, ["validate", str(letters), *options, *sender])

    assert result.exit_code == 0, result.output
    assert dns_server == []


def test_a_run_with_the_setting_sends_only_to_domains_that_take_mail(
    tmp_path: Path, dns_server: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the same file and MAILMATRIX_CHECK_DELIVERABILITY=1 in the shell
    monkeypatch.setenv("MAILMATRIX_CHECK_DELIVERABILITY", "1")
    workdir = tmp_path / "wd"
    letters, options = _campaign(tmp_path)

    # WHEN it is run (validation runs in this process: the resolver the test set is its own)
    result = CliRunner().invoke(
        cli,
        ["run", str(letters), *options, "--workdir", str(workdir), "--sender", "hr@example.com"],
    )

    # THEN only the rows of the domains that take mail are in the outbox (the run succeeds:
    # rejected rows are reported, not a failure)
    assert result.exit_code == exits.OK, result.output
    assert "row 4 rejected [Email]" in result.output
    recipients = sorted(
        line.split(":", 1)[1].strip()
        for message in (workdir / "outbox" / "new").iterdir()
        for line in message.read_text(encoding="utf-8").splitlines()
        if line.startswith("To:")
    )
    assert recipients == [
        f"Person 0 <person0@{MAIL}>",
        f"Person 1 <person1@{HOST_ONLY}>",
        f"Person 4 <person4@{MAIL}>",
    ]
