"""The JSONL ItemReader reads line by line: the same items as before, cut at LF only."""

from __future__ import annotations

import json

import pytest

from mailmatrix.engine.errors import StatesError
from mailmatrix.engine.reader import read_items

JSONL = {"InputType": "JSONL"}


def test_items_are_cut_at_line_feeds_only():
    # GIVEN records whose strings hold U+2028, NEL and a form feed, blank lines, no final LF
    records = [{"a": "x\u2028y"}, {"b": "\x85\x0c"}, {"c": 3}]
    data = "\ufeff" + json.dumps(records[0], ensure_ascii=False) + "\n\n"
    data += json.dumps(records[1], ensure_ascii=False) + "\r\n   \n" + json.dumps(records[2])
    # WHEN the reader decodes them THEN it gets every record whole, in order
    assert read_items(data.encode("utf-8"), JSONL, None) == records
    assert read_items(data.encode("utf-8"), JSONL, 2) == records[:2]


def test_a_bad_line_is_named_by_its_number():
    with pytest.raises(StatesError, match="JSONL: line 3 is not valid JSON"):
        read_items(b'{"a": 1}\n\n{oops\n', JSONL, None)
