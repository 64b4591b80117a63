"""Option checks shared by several commands, so each refuses a bad value the same way."""

from __future__ import annotations

import click


def check_sender(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a --sender that is not one usable address before anything runs (exit 2)."""
    if value:
        from mailmatrix.core.send import sender_problem

        problem = sender_problem(value)
        if problem:
            raise click.BadParameter(problem)
    return value
