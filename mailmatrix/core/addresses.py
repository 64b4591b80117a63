"""Email address syntax and normalisation for sending through SES.

SES has no SMTPUTF8: the local part must be ASCII and an internationalised domain goes out as
Punycode (IDNA/UTS-46). email-validator does the checking; plain ASCII addresses take a fast
path (the local part by a dot-atom pattern, the domain checked once per distinct domain).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import NamedTuple

import email_validator

logger = logging.getLogger(__name__)

NON_ASCII_LOCAL = "non-ASCII local part not supported by SES (no SMTPUTF8)"

# RFC 5322 dot-atom of ASCII atext; anything else (quoted local parts, odd dots, non-ASCII)
# goes through email-validator in full, which words the reason.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_LOCAL = 64
_MAX_ADDRESS = 254


class Address(NamedTuple):
    """A checked address: ``email`` to send to, ``key`` to find duplicates, or a ``problem``.

    A NamedTuple rather than a frozen dataclass: one is built per row, and this is cheaper.
    """

    email: str = ""
    key: str = ""
    problem: str | None = None


def parse_address(text: str, *, check_deliverability: bool = False) -> Address:
    """Check one address and return it normalised for SES, or with the reason it is unusable."""
    text = text.strip()
    if not text:
        return Address(problem="address is empty")
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return Address(problem=f"not an email address: {_shown(text)} (no @-sign)")
    if not local.isascii():
        return Address(problem=NON_ASCII_LOCAL)

    if len(local) > _MAX_LOCAL:
        # RFC 5321 section 4.5.3.1.1; email-validator 2.4 lets longer local parts through.
        return Address(problem=f"invalid address: more than {_MAX_LOCAL} characters before the @")
    if not _DOT_ATOM.fullmatch(local):
        return _full_check(text, check_deliverability)

    ascii_domain = _check_domain(domain, check_deliverability)
    if ascii_domain.startswith("!"):
        return Address(problem=ascii_domain[1:])
    email = f"{local}@{ascii_domain}"
    if len(email) > _MAX_ADDRESS:
        return _full_check(text, check_deliverability)
    return Address(email=email, key=f"{local.lower()}@{ascii_domain.lower()}")


def mask(email: str) -> str:
    """Return the address with its local part hidden after the first character (a***@x.org);
    a cell holding several (``a@x.org, b@y.org``) has each masked alike."""
    if email.count("@") > 1:
        pieces = [piece for piece in _SEVERAL.split(email.strip()) if piece]
        if len(pieces) > 1:
            return ", ".join(map(mask, pieces))
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return "***" if email.strip() else ""
    return f"{local[:1]}***@{domain}"


# Where a cell that holds several addresses splits: commas, semicolons, spaces.
_SEVERAL = re.compile(r"[\s,;]+")


def mask_addresses(text: str) -> str:
    """``text`` with every address in it masked as mask() masks one: a mail server's reply
    may quote the recipient in full (``550 5.1.1 <v***@example.com>: ... rejected``)."""
    return _IN_TEXT.sub(lambda found: mask(found.group()), text)


def addresses_in(text: str) -> list[str]:
    """The addresses written within ``text`` (a sentence, a mailto: link), as mask_addresses
    finds them."""
    return _IN_TEXT.findall(text)


# An address within free text: a local part (plain, or quoted), "@", a domain. A local part
# stops at the brackets and punctuation that set an address off in a reply; a domain at a
# full stop that ends a sentence.
_IN_TEXT = re.compile(r'(?:"[^"\r\n]*"|[^\s<>()\[\],;:"@]+)@[\w-]+(?:\.[\w-]+)*')

# Names reserved for examples and tests, where no real person receives mail: the second-level
# names of RFC 2606 (with their subdomains) and its top-level ones with RFC 6761's .localhost.
# (email-validator refuses .test, .invalid and .localhost as special-use already; it takes
# example.com and .example, which the demo campaign is addressed to.)
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
RESERVED_TOP_LEVEL = frozenset({"example", "test", "invalid", "localhost"})


# How a refusal names them to the operator.
RESERVED_SAID = "example.com, example.org, example.net, .example, .test, .invalid, .localhost"


def is_reserved_domain(domain: str) -> bool:
    """Whether ``domain`` is one reserved for examples and tests (example.com, .test, ...).

    Read as written (case and a final dot aside): a domain spelled in any other way counts as
    a real one, the safe side for a check that keeps demo letters from real people.
    """
    name = domain.strip().rstrip(".").lower()
    if name.rpartition(".")[2] in RESERVED_TOP_LEVEL:
        return True
    return any(name == example or name.endswith(f".{example}") for example in EXAMPLE_DOMAINS)


def first_real(addresses: Iterable[tuple[int, str, str]]) -> tuple[int, str, str] | None:
    """The first (row, column, address) of ``addresses`` at a domain not reserved for
    examples: someone the demo templates must not reach. None when every one is reserved."""
    return next(
        (found for found in addresses if not is_reserved_domain(found[2].rpartition("@")[2])),
        None,
    )


@functools.lru_cache(maxsize=8192)
def _check_domain(domain: str, check_deliverability: bool) -> str:
    """Return the domain as ASCII (Punycode), or "!" followed by the reason it is invalid."""
    try:
        result = email_validator.validate_email(
            f"a@{domain}",
            check_deliverability=check_deliverability,
            allow_smtputf8=False,
        )
    except email_validator.EmailNotValidError as error:
        logger.debug("domain refused: %s", error)
        return f"!invalid address domain: {error}"
    return result.ascii_domain


def _full_check(text: str, check_deliverability: bool) -> Address:
    """Validate the whole address with email-validator (the slow, thorough path)."""
    try:
        result = email_validator.validate_email(
            text, check_deliverability=check_deliverability, allow_smtputf8=False
        )
    except email_validator.EmailNotValidError as error:
        said = str(error)
        if "display name" in said:  # "Name <x@y>" in a cell that takes an address only
            said += " Keep only the address (x@y) in the cell; the name goes in its own column."
        return Address(problem=f"invalid address: {said}")
    email = result.ascii_email or ""
    local, _, domain = email.rpartition("@")
    return Address(email=email, key=f"{local.lower()}@{domain.lower()}")


def _shown(text: str) -> str:
    """Quote a value for a reason, shortened so reports stay readable."""
    return repr(text if len(text) <= 60 else text[:57] + "...")
