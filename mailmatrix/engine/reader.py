"""The Distributed Map ItemReader: CSV (AWS parse rules), JSON and JSON Lines from the store.

The CSV rules are those of the Step Functions page "How Step Functions parses input CSV
files" (https://docs.aws.amazon.com/step-functions/latest/dg/example-csv-parse-dist-map.html),
which differ from Python's csv module: a backslash escapes only a backslash, a double quote or
the delimiter and is silently dropped before any other character; short rows are padded with
empty strings; extra fields are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from mailmatrix.engine.errors import ITEM_READER_FAILED, StatesError

DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


def parse_csv_records(text: str, delimiter: str = ",") -> list[list[str]]:
    """Split CSV text into records of fields by the Step Functions rules."""
    records: list[list[str]] = []
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
                records.append(fields)
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
        records.append(fields)
    return records


def csv_items(text: str, config: dict[str, Any]) -> list[dict[str, str]]:
    """CSV text as a list of objects keyed by the header (first row or given headers)."""
    delimiter = DELIMITERS[config.get("CSVDelimiter", "COMMA")]
    records = parse_csv_records(text, delimiter)
    if config.get("CSVHeaderLocation") == "GIVEN":
        headers = list(config["CSVHeaders"])
    else:
        if not records:
            raise StatesError(ITEM_READER_FAILED, "CSV: the file has no header row")
        headers, records = records[0], records[1:]
    items = []
    for record in records:
        padded = record[: len(headers)] + [""] * (len(headers) - len(record))
        items.append(dict(zip(headers, padded, strict=True)))
    return items


def read_items(data: bytes, config: dict[str, Any], max_items: int | None) -> list[Any]:
    """Decode an object's bytes into Map items per ReaderConfig; failures: ItemReaderFailed."""
    kind = config.get("InputType")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StatesError(ITEM_READER_FAILED, f"{kind}: the object is not UTF-8: {exc}") from exc
    limit = max_items if max_items else None
    if kind == "CSV":
        items: list[Any] = csv_items(text, config)
    elif kind == "JSON":
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise StatesError(ITEM_READER_FAILED, f"JSON: not valid JSON: {exc}") from exc
        if not isinstance(items, list):
            raise StatesError(ITEM_READER_FAILED, "JSON: the object must hold a JSON array")
    else:
        items = []
        # JSON Lines records end at "\n" only: str.splitlines() would also cut inside a string
        # holding U+2028, U+0085 or a form feed, which JSON allows unescaped.
        for number, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise StatesError(
                    ITEM_READER_FAILED, f"JSONL: line {number} is not valid JSON: {exc}"
                ) from exc
    return items[:limit] if limit is not None else items


def _lines(text: str) -> Iterator[str]:
    """``text.split("\\n")`` one line at a time, without a list of every line at once."""
    start = 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1
