"""Option checks shared by several commands, so each refuses a bad value the same way."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import click

from mailmatrix.core.pacing import MIN_SEND_RATE
from mailmatrix.settings import SEND_RATE_RANGE

SENDER_VARIABLE = "MAILMATRIX_SENDER"


def check_sender(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a From address that is not one usable address before anything runs: a bad
    usage or setting (exit 2), whether it is --sender or, without it, MAILMATRIX_SENDER (the
    manifest's sender is the templates', checked with them)."""
    given = value or os.environ.get(SENDER_VARIABLE, "").strip()
    if given:
        from mailmatrix.core.send import sender_problem

        problem = sender_problem(given)
        if problem:
            raise click.BadParameter(problem, param_hint=None if value else SENDER_VARIABLE)
    return value


def finite(what: str) -> Callable[[click.Context, click.Parameter, float | None], float | None]:
    """An option callback that refuses nan and inf, which click's FloatRange lets through (a
    deadline of nan never comes): a bad usage (exit 2) that says to give ``what``."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"{value}: give {what}")
        return value

    return check


def check_send_rate(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    """Refuse a send rate that cannot be paced: nan and inf (``finite``), and one above 0 but
    below MIN_SEND_RATE, which the plan's rounding took for no limit at all: a bad usage
    (exit 2), as the setting MAILMATRIX_SEND_RATE is refused."""
    value = finite("a number of messages per second (0: no limit)")(ctx, param, value)
    if value and value < MIN_SEND_RATE:
        raise click.BadParameter(f"{value:g}: {SEND_RATE_RANGE}")
    return value


def file_names(given: tuple[str, ...]) -> tuple[str, ...]:
    """The names of the files ``given`` (names, or paths to them): a campaign is its file's
    name, wherever the file is (--send-again-from)."""
    return tuple(os.path.basename(value.rstrip("/\\")) or value for value in given)


def send_again_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The --send-again-from OTHERFILE option (``send_again_from``: the files' names) of
    `run` and `validate`, with its ``help``."""
    return click.option(
        "--send-again-from",
        "send_again_from",
        multiple=True,
        metavar="OTHERFILE",
        callback=lambda ctx, param, value: file_names(value),
        help=help,
    )


SEND_AGAIN_HELP = (
    "Send the letters that already went to the same addresses under OTHERFILE (a file "
    "of another name: a renamed copy of this one) all the same; without it they are held "
    "back. Recorded in the ledger. May be given more than once."
)


class RowNumber(click.ParamType):
    """A row of the file by its number as a spreadsheet shows it: 2 is the first row under
    the header. Not click's IntRange, whose help says ``[x>=2]``."""

    name = "row"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """The row number ``value`` names; a bad usage (exit 2) if it names no row."""
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value}: {ROW_NUMBERS}", param, ctx)
        if number < FIRST_ROW:
            self.fail(f"{value}: {ROW_NUMBERS}", param, ctx)
        return number


# Row 1 is the header.
FIRST_ROW = 2
ROW_NUMBERS = "give a row's number as the file counts rows: 2 is the first row under the header"


def corrected_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The --corrected-address ROW option (``corrected``: the rows) of `run`, `validate` and
    `aws send`, with its ``help``, which then says how rows are counted."""
    return click.option(
        "--corrected-address",
        "corrected",
        multiple=True,
        type=RowNumber(),
        metavar="ROW",
        help=f"{help} ROW counts the file's rows from 2, the first row under the header.",
    )


# `run`'s and `aws send`'s --corrected-address.
corrected_address_option = corrected_option(
    "Row ROW's address was wrong when its letter went out and is corrected now: send "
    "its letter to the corrected address, though its attachment went to the earlier one "
    "(AttachmentOfAnother). Recorded in the ledger. May be given more than once."
)
