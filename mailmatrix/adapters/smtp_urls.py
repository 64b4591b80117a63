"""SMTP URLs as people may see them (without their password), and their default ports.

Apart from the SMTP mailer so that a run that only shows such a URL (``mailmatrix run`` and
its local wiring) does not import smtplib and ssl: a local run delivers to a Maildir.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

# Where a URL naming a user and no password takes the password from.
PASSWORD_VARIABLE = "MAILMATRIX_SMTP_PASSWORD"

# The port of each scheme when the URL gives none.
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def redacted(url: str) -> str:
    """An SMTP URL with its password shown as ``***``."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"


def without_password(url: str) -> str:
    """An SMTP URL with its user but not its password (``MAILMATRIX_SMTP_PASSWORD`` gives it)."""
    return redacted(url).replace(":***@", "@", 1)


def delivery_of(mailer: str) -> str:
    """How a mailer setting delivers, without its password: ``outbox`` (a Maildir),
    ``smtp://user@host:port``, or ``ses`` (what must not change between a campaign's runs)."""
    if mailer.startswith("maildir://"):
        return "outbox"
    if "://" not in mailer:
        return mailer
    parts = urlsplit(mailer)
    user = f"{unquote(parts.username)}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    return f"{parts.scheme}://{user}{host}{port}"


def url_warnings(url: str | None, password_set: bool) -> list[str]:
    """What to warn of an SMTP URL given on the command line: a password in it (kept out of
    the workdir's settings, but in the shell's history and the process list), or a password
    in MAILMATRIX_SMTP_PASSWORD (``password_set``) that a URL naming no user leaves unused."""
    if not url or "://" not in url:
        return []
    parts = urlsplit(url)
    if parts.password:
        return [
            "the --smtp URL carries a password: it is in your shell's history and the list of"
            " processes; leave it out (smtp://USER@HOST) and set MAILMATRIX_SMTP_PASSWORD"
            " instead. The workdir keeps the URL without it: a redrive needs"
            " MAILMATRIX_SMTP_PASSWORD set"
        ]
    if not parts.username and password_set:
        return [
            "MAILMATRIX_SMTP_PASSWORD is set but the --smtp URL names no user, so no login is"
            " made and the password is not used (a server that needs one answers 530): name"
            " the user in the URL (smtp://USER@HOST) to log in"
        ]
    return []
