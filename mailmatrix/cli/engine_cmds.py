"""Commands of the `mailmatrix` CLI (see docs/architecture.md for who owns this module)."""

from __future__ import annotations

import click

commands: list[click.Command] = []
