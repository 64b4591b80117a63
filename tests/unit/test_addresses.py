"""Address checks: SES rules (ASCII local part, Punycode domain), fast path agrees with the slow."""

from __future__ import annotations

import email_validator
import pytest

from mailmatrix.core.addresses import (
    NON_ASCII_LOCAL,
    Address,
    is_reserved_domain,
    mask,
    mask_addresses,
    parse_address,
)


@pytest.mark.parametrize(
    ("text", "email", "key"),
    [
        ("alice@example.com", "alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM ", "Alice@example.com", "alice@example.com"),
        ("anna@bücher.example", "anna@xn--bcher-kva.example", "anna@xn--bcher-kva.example"),
        ("ANNA@BÜCHER.example", "ANNA@xn--bcher-kva.example", "anna@xn--bcher-kva.example"),
        ("bob@xn--bcher-kva.example", "bob@xn--bcher-kva.example", "bob@xn--bcher-kva.example"),
        ("o'brien+tag@mail.example.org", "o'brien+tag@mail.example.org",
         "o'brien+tag@mail.example.org"),
    ],
)  # fmt: skip
def test_valid_addresses_are_normalised_for_ses(text, email, key):
    assert parse_address(text) == Address(email=email, key=key)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "address is empty"),
        ("alice", "not an email address: 'alice' (no @-sign)"),
        ("@example.com", "not an email address: '@example.com' (no @-sign)"),
        ("josé@example.com", NON_ASCII_LOCAL),
        ("用户@例子.广告", NON_ASCII_LOCAL),
        ("a..b@example.com", "invalid address: An email address cannot have two periods in a row."),
        (".a@example.com", "invalid address: An email address cannot start with a period."),
        ('"quoted"@example.com', "invalid address: Quoting the part before the @-sign is not "
         "allowed here."),
        ("Alice <alice@example.com>", "invalid address: "),
        ("alice@localhost", "invalid address domain: "),
        ("alice@example", "invalid address domain: "),
        ("alice@-example.com", "invalid address domain: "),
        ("a b@example.com", "invalid address: "),
        ("x" * 65 + "@example.com", "invalid address: more than 64 characters before the @"),
    ],
)  # fmt: skip
def test_invalid_addresses_say_why(text, problem):
    result = parse_address(text)

    assert result.email == ""
    assert result.problem is not None
    assert result.problem.startswith(problem)


@pytest.mark.parametrize(
    "text",
    [
        "alice@example.com",
        "Alice.Smith@Sub.Example.Org",
        "first.last+tag@example.co.uk",
        "a@b.cd",
        "x_y-z@exa-mple.com",
        "weird!#$%&'*+/=?^_`{|}~@example.com",
        "trailing.@example.com",
        "a@b..example.com",
        "a@123.com",
        "a@example.123",
        "z@bücher.example",
        "very.long." + "l" * 50 + "@example.com",
    ],
)
def test_fast_path_agrees_with_email_validator(text):
    # GIVEN email-validator's own verdict on the whole address
    try:
        full = email_validator.validate_email(
            text, check_deliverability=False, allow_smtputf8=False
        )
        expected = full.ascii_email
    except email_validator.EmailNotValidError:
        expected = None

    # WHEN the address goes through parse_address (fast path where it can)
    result = parse_address(text)

    # THEN both accept the same address, to the same normalised form, or both refuse it
    assert (result.email or None) == expected
    assert (result.problem is None) == (expected is not None)


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("alice@example.com", "a***@example.com"),
        ("A@x.org", "A***@x.org"),
        ("nobody", "***"),
        ("", ""),
        # a cell holding several: each masked, none shown under another's domain
        ("bob@example.net, eve@evil.example", "b***@example.net, e***@evil.example"),
        ("x@y.org;z@w.org", "x***@y.org, z***@w.org"),
    ],
)
def test_mask_hides_the_local_part(email, masked):
    assert mask(email) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "550 5.1.1 <victor.hugo@example.com>: Recipient address rejected",
            "550 5.1.1 <v***@example.com>: Recipient address rejected",
        ),
        (
            "identities failed the check in region EU-WEST-1: bob@example.com, ann@x.org.",
            "identities failed the check in region EU-WEST-1: b***@example.com, a***@x.org.",
        ),
        ("550 <jürgen@exämple.org>: user unknown", "550 <j***@exämple.org>: user unknown"),
        ('550 <"victor hugo"@example.com> unknown', '550 <"***@example.com> unknown'),
        ("550 <bounce+id=x/y@mail.example.com>", "550 <b***@mail.example.com>"),
        ("550 <v***@example.com> masked already", "550 <v***@example.com> masked already"),
        ("smtp 127.0.0.1:25: no address @ here, nor in x@ y", None),
    ],
    ids=["rcpt-reply", "ses-identities", "non-ascii", "quoted-local", "tagged", "masked", "none"],
)
def test_mask_addresses_hides_each_address_in_a_text(text, masked):
    assert mask_addresses(text) == (text if masked is None else masked)


@pytest.mark.parametrize(
    ("domain", "reserved"),
    [
        ("example.com", True),
        ("Mail.EXAMPLE.org.", True),
        ("example.net", True),
        ("bücher.example", True),
        ("example", True),
        ("host.test", True),
        ("x.invalid", True),
        ("localhost", True),
        ("gmail.com", False),
        ("example.com.evil.net", False),
        ("notexample.com", False),
        ("example.co", False),
        ("", False),
    ],
)
def test_reserved_domains_are_those_of_examples_and_tests(domain, reserved):
    assert is_reserved_domain(domain) is reserved
