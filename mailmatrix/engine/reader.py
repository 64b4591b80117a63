"""The Distributed Map ItemReader: CSV (AWS parse rules), JSON and JSON Lines from the store.

The CSV rules are those of the Step Functions page "How Step Functions parses input CSV
files" (https://docs.aws.amazon.com/step-functions/latest/dg/example-csv-parse-dist-map.html),
which differ from Python's csv module: a backslash escapes only a backslash, a double quote or
the delimiter and is silently dropped before any other character; short rows are padded with
empty strings; extra fields are dropped.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from mailmatrix.engine.errors import ITEM_READER_FAILED, StatesError

DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}
# A \u escape of a UTF-16 surrogate (U+D800 to U+DFFF): JSON lets one stand alone, but alone
# it is no character, and no UTF-8 text (a child's input, a result file) can hold it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_csv_records(text: str, delimiter: str = ",") -> list[list[str]]:
    """Split CSV text into records of fields by the Step Functions rules."""
    return list(iter_csv_records(text, delimiter))


def iter_csv_records(text: str, delimiter: str = ",") -> Iterator[list[str]]:
    """CSV records one at a time by the Step Functions rules (an open quote fails at the end)."""
    fields: list[str] = []
    field: list[str] = []
    in_quotes = False
    started = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            # Backslash escapes \, " and the delimiter; before anything else it is dropped.
            nxt = text[i + 1]
            if nxt in ("\\", '"', delimiter):
                field.append(nxt)
                i += 2
            else:
                i += 1
            started = True
            continue
        if in_quotes:
            if char == '"':
                if text.startswith('"', i + 1):
                    field.append('"')
                    i += 2
                    continue
                in_quotes = False
            else:
                field.append(char)
            i += 1
            continue
        if char == '"':
            in_quotes = True
            started = True
        elif char == delimiter:
            fields.append("".join(field))
            field = []
            started = True
        elif char in "\r\n":
            if started or field:
                fields.append("".join(field))
                yield fields
            fields, field, started = [], [], False
            if char == "\r" and text.startswith("\n", i + 1):
                i += 1
        else:
            field.append(char)
            started = True
        i += 1
    if in_quotes:
        raise StatesError(ITEM_READER_FAILED, "CSV: a quoted field is not closed")
    if started or field:
        fields.append("".join(field))
        yield fields


def csv_items(text: str, config: dict[str, Any]) -> list[dict[str, str]]:
    """CSV text as a list of objects keyed by the header (first row or given headers)."""
    return list(_csv_items(text, config, None))


def _csv_items(text: str, config: dict[str, Any], limit: int | None) -> Iterator[dict[str, str]]:
    delimiter = DELIMITERS[config.get("CSVDelimiter", "COMMA")]
    records = iter_csv_records(text, delimiter)
    if config.get("CSVHeaderLocation") == "GIVEN":
        headers = list(config["CSVHeaders"])
    else:
        first = next(records, None)
        if first is None:
            raise StatesError(ITEM_READER_FAILED, "CSV: the file has no header row")
        headers = first
    count = 0
    for record in records:
        if limit is not None and count >= limit:
            continue  # the rest is still parsed: an open quote anywhere fails the file
        padded = record[: len(headers)] + [""] * (len(headers) - len(record))
        count += 1
        yield dict(zip(headers, padded, strict=True))


def read_items(data: bytes, config: dict[str, Any], max_items: int | None) -> list[Any]:
    """Decode an object's bytes into Map items per ReaderConfig; failures: ItemReaderFailed."""
    return list(iter_items(io.BytesIO(data), config, max_items))


def iter_items(stream: BinaryIO, config: dict[str, Any], max_items: int | None) -> Iterator[Any]:
    """Map items read from a binary stream per ReaderConfig, one at a time.

    JSON Lines are read line by line; CSV text and JSON arrays are read whole, then their items
    are handed out one at a time. Failures raise ItemReaderFailed as the items are read.
    """
    for item, _ in iter_bounded_items(stream, config, max_items):
        yield item


def iter_bounded_items(
    stream: BinaryIO, config: dict[str, Any], max_items: int | None
) -> Iterator[tuple[Any, int | None]]:
    """iter_items, each item with a bound on its compact JSON's UTF-8 bytes plus one (a
    separator's), or None where none is known without serialising it.

    A JSON Lines item's bound is its line's bytes plus one: compact JSON drops the line's
    blanks, keeps or shortens each string escape and integer, and keeps the last of repeated
    keys, so it is never longer, except for a number with a fraction or exponent ("1e5" is
    100000.0): an item holding one has no bound.
    """
    kind = config.get("InputType")
    limit = max_items if max_items else None
    if kind in ("CSV", "JSON"):
        text = _decode(stream.read(), kind, first=True)
        if kind == "CSV":
            for row in _csv_items(text, config, limit):
                yield row, None
            return
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise StatesError(ITEM_READER_FAILED, f"JSON: not valid JSON: {exc}") from exc
        if not isinstance(items, list):
            raise StatesError(ITEM_READER_FAILED, "JSON: the object must hold a JSON array")
        escapes = _SURROGATE_ESCAPE.search(text) is not None
        del text
        for index, item in enumerate(items[:limit] if limit is not None else items):
            if escapes:
                check_characters(item, f"JSON: item {index}")
            yield item, None
        return
    floats = [False]

    def parse_float(literal: str) -> float:
        floats[0] = True
        return float(literal)

    decoder = json.JSONDecoder(parse_float=parse_float)
    # JSON Lines records end at "\n" only (a binary stream's lines): str.splitlines() would
    # also cut inside a string holding U+2028, U+0085 or a form feed, which JSON allows.
    count = 0
    for number, raw in enumerate(stream, start=1):
        line = _decode(raw, kind, first=number == 1)
        if limit is not None and count >= limit:
            continue  # the rest is still decoded: bytes that are not UTF-8 fail the object
        if not line.strip():
            continue
        floats[0] = False
        try:
            item = decoder.decode(line)
        except ValueError as exc:
            raise StatesError(
                ITEM_READER_FAILED, f"JSONL: line {number} is not valid JSON: {exc}"
            ) from exc
        if _SURROGATE_ESCAPE.search(line):
            check_characters(item, f"JSONL: line {number}")
        count += 1
        yield item, None if floats[0] else len(raw) + 1


def check_characters(item: Any, where: str) -> None:
    """Refuse an item (or any JSON value) holding a lone surrogate, as ItemReaderFailed:
    it could be written nowhere, and would fail as it is serialised, without saying where."""
    try:
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise StatesError(
            ITEM_READER_FAILED,
            f"{where} holds a lone surrogate (a \\ud800 to \\udfff escape not in a pair),"
            " which is no character",
        ) from None


def _decode(data: bytes, kind: Any, *, first: bool) -> str:
    try:
        return data.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise StatesError(ITEM_READER_FAILED, f"{kind}: the object is not UTF-8: {exc}") from exc
