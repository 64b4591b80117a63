"""Measuring the memory a piece of code takes (tracemalloc)."""

from __future__ import annotations

import tracemalloc
from typing import Any


class TracedPeak:
    """The most memory Python allocations held inside a ``with`` block, above what they held
    as it began (``bytes``); tracemalloc runs for the block unless it already ran."""

    bytes = 0

    def __enter__(self) -> TracedPeak:
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self._before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1] - self._before
        if self._started:
            tracemalloc.stop()
