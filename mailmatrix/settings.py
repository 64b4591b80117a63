"""Every MAILMATRIX_* setting, parsed once from the environment.

The same variables configure the Lambda handlers on AWS (the SAM template sets them) and on
one machine (``mailmatrix.local`` sets them from the CLI's flags).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mailmatrix.core.pacing import MIN_SEND_RATE
from mailmatrix.errors import ConfigurationError

# SES v2 accepts messages up to 40 MB including attachments, counted after base64 encoding:
# https://docs.aws.amazon.com/ses/latest/dg/quotas.html
SES_V2_MAX_MESSAGE_BYTES = 40 * 1024 * 1024

# What a send rate may be (messages a second), the words that refuse another.
SEND_RATE_RANGE = (
    f"give 0 (no limit) or at least {MIN_SEND_RATE:.4f} (one message a minute): each batch"
    " paces its rows within one run of the send function, 15 minutes at most"
)

# The setting that names the mail service, as errors name it when the URL came from it.
MAILER_SETTING = "MAILMATRIX_MAILER"

N = TypeVar("N", int, float)  # a setting's number
D = TypeVar("D", int, float, None)  # its default


@dataclass(frozen=True)
class Settings:
    """The handlers' configuration."""

    storage: str = "s3"
    mailer: str = "ses"
    # Where the operator gave ``mailer``, as errors name it: the setting, or (a local run)
    # the option `mailmatrix run --smtp`.
    mailer_given_as: str = MAILER_SETTING
    ledger: str = ""
    sender: str = ""
    send_rate: float | None = None
    max_message_bytes: int = SES_V2_MAX_MESSAGE_BYTES
    batch_size: int = 25
    max_concurrency: int = 40
    configuration_set: str | None = None
    unsubscribe: str | None = None
    check_deliverability: bool = False
    faults: str | None = None
    templates_prefix: str = "templates/"
    attachments_prefix: str = "attachments/"
    storage_mounts: tuple[tuple[str, str], ...] = ()
    # The CloudFormation stack the functions run in (the operator's `mailmatrix aws` commands
    # name it); empty on one machine.
    stack: str = ""
    # Where Validate and Summarize write their files on the way (the manifest, the report,
    # which hold addresses and names): the system's temporary folder (Lambda's /tmp) unless
    # set; a local run keeps them in its workdir, so a killed run leaves none in /tmp.
    scratch: str | None = None
    # The ledgers of the other workdirs whose runs sent through mail servers, as a local run
    # gives them to validation (adapters.ledgers_elsewhere); empty on AWS (one table).
    other_ledgers: str = ""

    @property
    def into_outbox(self) -> bool:
        """Whether the mailer only files the letters in a local Maildir outbox: nobody
        receives them."""
        return self.mailer.startswith("maildir://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env

        def text(name: str, default: str | None = None) -> str | None:
            value = env.get(f"MAILMATRIX_{name}", "").strip()
            return value or default

        def number(name: str, default: D, kind: Callable[[str], N]) -> N | D:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
                if not math.isfinite(value):  # float() takes nan and inf
                    raise ValueError(raw)
            except ValueError:
                raise ConfigurationError(f"MAILMATRIX_{name}: not a number: {raw!r}") from None
            if value < 0:
                raise ConfigurationError(f"MAILMATRIX_{name}: must not be negative: {raw!r}")
            return value

        batch_size = number("BATCH_SIZE", 25, int)
        if not 1 <= batch_size <= 1000:
            raise ConfigurationError(f"MAILMATRIX_BATCH_SIZE: must be 1..1000, got {batch_size}")
        send_rate = number("SEND_RATE", None, float)
        if send_rate and send_rate < MIN_SEND_RATE:
            raise ConfigurationError(f"MAILMATRIX_SEND_RATE: {send_rate:g}: {SEND_RATE_RANGE}")
        return cls(
            storage=text("STORAGE", "s3") or "s3",
            mailer=text("MAILER", "ses") or "ses",
            mailer_given_as=text("MAILER_GIVEN_AS", MAILER_SETTING) or MAILER_SETTING,
            ledger=text("LEDGER", "") or "",
            sender=text("SENDER", "") or "",
            send_rate=send_rate,
            max_message_bytes=number("MAX_MESSAGE_BYTES", SES_V2_MAX_MESSAGE_BYTES, int),
            batch_size=batch_size,
            max_concurrency=max(1, number("MAX_CONCURRENCY", 40, int)),
            configuration_set=text("CONFIGURATION_SET"),
            unsubscribe=text("UNSUBSCRIBE"),
            check_deliverability=text("CHECK_DELIVERABILITY", "0") in {"1", "true", "yes"},
            faults=text("FAULTS"),
            templates_prefix=text("TEMPLATES_PREFIX", "templates/") or "templates/",
            attachments_prefix=text("ATTACHMENTS_PREFIX", "attachments/") or "attachments/",
            storage_mounts=_mounts(text("STORAGE_MOUNTS", "") or ""),
            stack=text("STACK", "") or "",
            scratch=text("SCRATCH"),
            other_ledgers=text("OTHER_LEDGERS", "") or "",
        )


def _mounts(spec: str) -> tuple[tuple[str, str], ...]:
    """Parse ``attachments/=/dir;templates/=/dir2`` (local storage only) into pairs."""
    pairs = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        prefix, sep, path = part.partition("=")
        if not sep or not prefix.endswith("/") or not path:
            raise ConfigurationError(
                f"MAILMATRIX_STORAGE_MOUNTS: expected PREFIX/=DIR;..., got {part!r}"
            )
        pairs.append((prefix, path))
    return tuple(pairs)
