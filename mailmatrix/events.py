"""The parts of the events the functions are invoked with, each checked as it is read.

The stack makes these events (the S3 upload's EventBridge rule, the state machine, the
execution alert rule); one malformed (a definition edited, a function invoked by hand) stops
its function with one error naming the part, before anything is done, instead of a KeyError
or TypeError from deep inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailmatrix.errors import MailMatrixError

# What the error of an event the state machine makes says to do.
BY_THE_STATE_MACHINE = (
    "The state machine makes it: start a campaign by uploading its file (mailmatrix aws send"
    " FILE.csv --stack NAME), not by invoking the function; a definition edited by hand"
    " must pass on what the stack's template gives it."
)

_KINDS: dict[type, str] = {
    dict: "a mapping",
    list: "a list",
    str: "a text",
    int: "a number",
    float: "a number",
    bool: "true or false",
}


def kind_of(value: Any) -> str:
    """What ``value`` is, in JSON's terms ("null", "a list", "a text"...)."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class EventShape:
    """The event one function takes: ``what`` it is, which ``error`` a malformed one raises,
    and what the error says was not done and what to do (``after``)."""

    what: str
    error: type[MailMatrixError]
    after: str

    def part(self, event: Any, path: str, kind: type, *, optional: bool = False) -> Any:
        """The part of ``event`` at ``path`` (keys joined by dots), which must be ``kind``
        (a text: not empty); None for a missing ``optional`` part."""
        value = event
        walked: list[str] = []
        for key in path.split("."):
            if not isinstance(value, dict):
                where = ".".join(walked) or "the event"
                if value is None and walked:
                    raise self.malformed(f"{where} is missing")
                raise self.malformed(f"{where} is {kind_of(value)}, not a mapping")
            walked.append(key)
            value = value.get(key)
        if value is None or value == "":
            if optional:
                return None
            raise self.malformed(f"{path} is missing")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.malformed(f"{path} is {kind_of(value)}, not {_KINDS.get(kind, kind)}")
        return value

    def malformed(self, problem: str) -> MailMatrixError:
        """The error for an event whose ``problem`` is named."""
        return self.error(f"event: {problem}: not {self.what}; {self.after}")
