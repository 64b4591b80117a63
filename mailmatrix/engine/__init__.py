"""The local Amazon States Language interpreter (JSONPath dialect).

``Engine`` runs a definition to its end and persists the execution; ``ResourceRegistry`` maps
Task resources to Python callables; ``Listener`` (see mailmatrix.engine.listener) follows an
execution as it runs.
"""

from __future__ import annotations

from mailmatrix.engine.engine import Engine, ExecutionRecord
from mailmatrix.engine.errors import StatesError
from mailmatrix.engine.listener import Listener
from mailmatrix.engine.registry import (
    LambdaContext,
    ProcessInvoker,
    ResourceRegistry,
    ThreadInvoker,
)

__all__ = [
    "Engine",
    "ExecutionRecord",
    "LambdaContext",
    "Listener",
    "ProcessInvoker",
    "ResourceRegistry",
    "StatesError",
    "ThreadInvoker",
]
