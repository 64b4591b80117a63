"""Attachment names from the CSV: safety checks and lookup in one listing of the location.

A name is a bare file name. Paths of any kind are refused rather than resolved, so a row can
never reach outside the attachments location. Lookup is exact and case-sensitive, like S3
keys, with both sides in Unicode NFC (macOS and Windows write names in different forms); it
gives the name as listed, which the storage knows (S3 knows a key in one form only), and
refuses a name two files have in different forms.
Where the listing says two names are one file (links in a local folder), the index knows
them as one file, so intake can tell that rows naming them name the same letter.
"""

from __future__ import annotations

import codecs
import logging
import math
import re
import unicodedata
from collections.abc import Collection, Iterable
from typing import NamedTuple

from mailmatrix.core.filekinds import file_kind
from mailmatrix.ports import ObjectInfo

logger = logging.getLogger(__name__)

# Room kept for the headers and the text and HTML parts when estimating a message's size:
# https://docs.aws.amazon.com/ses/latest/dg/quotas.html counts the message after base64. At
# most an eighth of the limit: a limit set lower (MAILMATRIX_MAX_MESSAGE_BYTES) would else
# leave no room for any file (the demo's letters take under 5 KiB of it; a message that does
# not fit all the same fails its row at sending, measured whole).
MESSAGE_OVERHEAD_BYTES = 256 * 1024
_OVERHEAD_SHARE = 8
_BASE64_LINE = 76  # MIME base64 lines: 76 characters plus CRLF (RFC 2045)

# How a row's reason begins when its file is not in the attachments location (which the
# reason does not name: the summaries name it once, see cli.validate_cmd.attachments_note).
ATTACHMENT_NOT_FOUND = "attachment not found"

# A file named .pdf is sent as a PDF: its header must be within this many bytes of its start,
# as PDF readers accept it (pdf_problem).
PDF_HEAD_BYTES = 1024
_PDF_HEADER = b"%PDF-"
_SHOWN_TEXT = 32  # characters of a text file's start a reason shows

_CONTROL_NAMES = {0: "NUL", 9: "TAB", 10: "LF", 13: "CR", 127: "DEL"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Lookup(NamedTuple):
    """The outcome of looking up one name: the resolved ``name``, ``size`` and ``tag`` (the
    version listed, "" when the listing gives none), or a ``problem``."""

    name: str = ""
    size: int = 0
    problem: str | None = None
    tag: str = ""


def message_overhead(max_message_bytes: int) -> int:
    """The room an estimate of a message's size keeps for all but its attachment, under a
    limit of ``max_message_bytes``."""
    return min(MESSAGE_OVERHEAD_BYTES, max_message_bytes // _OVERHEAD_SHARE)


def encoded_size(size: int) -> int:
    """Return the bytes ``size`` bytes of attachment take in a message, base64 and line breaks."""
    encoded = 4 * math.ceil(size / 3)
    return encoded + 2 * math.ceil(encoded / _BASE64_LINE)


def name_problem(name: str) -> str | None:
    """Return why ``name`` is not a safe bare file name, or None when it is."""
    control = _CONTROL.search(name)
    if control:
        code = ord(control.group())
        label = _CONTROL_NAMES.get(code, f"U+{code:04X}")
        return f"control character ({label}) in attachment name"
    if "\\" in name:
        return (
            f"backslash in attachment name {name!r}: give a bare file name "
            "(a backslash is also altered by the Step Functions CSV reader)"
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        return f"absolute path in attachment name {name!r}: give a bare file name"
    if name in {".", ".."} or "/" in name:
        kind = "parent folder (..)" if ".." in name.split("/") else "folder"
        return f"{kind} in attachment name {name!r}: give a bare file name"
    return None


def is_pdf_name(name: str) -> bool:
    """Whether ``name`` says its file is a PDF (ends in .pdf, in any case)."""
    return name[-4:].lower() == ".pdf"


def pdf_problem(name: str, head: bytes) -> str | None:
    """Why the file ``name``, whose first PDF_HEAD_BYTES are ``head``, is no PDF though its
    name says so (a recipient's reader could not open it); None when it is one, or its name
    does not say."""
    if not is_pdf_name(name) or _PDF_HEADER in head[:PDF_HEAD_BYTES]:
        return None
    return (
        f"attachment is not a PDF: {name} {_starts_with(head)}, where a PDF starts with"
        f" {_PDF_HEADER.decode()}: put the letter, saved as a PDF, in its place"
    )


def _starts_with(head: bytes) -> str:
    """What a file that starts with ``head`` looks like, for a reason: its kind, the start of
    its text, or its first bytes in hex (nothing of it that a console would act on)."""
    kind = file_kind(head)
    if kind is not None:
        return f"looks like {kind}"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head[: _SHOWN_TEXT * 4])
    except UnicodeDecodeError:
        text = ""
    shown = " ".join(text.split())
    if shown and all(char.isprintable() or char in "\t\r\n" for char in text):
        shown = shown if len(shown) <= _SHOWN_TEXT else shown[:_SHOWN_TEXT] + "..."
        return f"is text that starts with '{shown}'"
    return f"starts with the bytes {head[:8].hex(' ')}"


class AttachmentIndex:
    """The attachments location as listed once: bare file name -> size in bytes and tag.

    A file's entry is its size (an int) where the listing gives no tag, else one string,
    ``"SIZE TAG"``: a million files' index holds one object per name either way (a pair
    would take another 90 bytes a file).

    ``links`` maps each name of a file listed under more than one name (a symlink and its
    target, hard links) to the first of its names in key order; names of a file that has
    only one are not in it.
    """

    def __init__(
        self,
        files: dict[str, int | str],
        links: dict[str, str] | None = None,
        *,
        listed: dict[str, str] | None = None,
        ambiguous: set[str] | None = None,
        folders: set[str] | None = None,
    ) -> None:
        self._files = files  # by the name in NFC
        self._links = links or {}
        # The name as listed, where it is not in NFC (a file written on macOS): the storage
        # knows it by that name, and S3 by no other.
        self._listed = listed or {}
        # Names in NFC of two files listed apart (one name in NFC, one in NFD): a row naming
        # either cannot tell which file it means.
        self._ambiguous = ambiguous or set()
        self._folders = folders or set()  # names of folders in the attachments location
        self._folded: dict[str, list[str]] | None = None
        self._stems: dict[str, list[str]] = {}

    @classmethod
    def from_listing(
        cls, objects: Iterable[ObjectInfo], prefix: str = "attachments/"
    ) -> AttachmentIndex:
        """Build the index from one listing; objects in sub-folders are not reachable."""
        files: dict[str, int | str] = {}
        named: dict[str, str] = {}  # identity -> the first name listed with it
        links: dict[str, str] = {}
        listed: dict[str, str] = {}  # name in NFC -> the name as listed, where they differ
        ambiguous: set[str] = set()
        folders: set[str] = set()
        for info in objects:
            if not info.key.startswith(prefix):
                continue
            name = info.key[len(prefix) :]
            if "/" in name:  # in a folder (an empty one lists as "name/")
                folders.add(unicodedata.normalize("NFC", name.partition("/")[0]))
                continue
            if not name:
                continue
            nfc = name if name.isascii() else unicodedata.normalize("NFC", name)
            if nfc in files and listed.get(nfc, nfc) != name:
                ambiguous.add(nfc)  # another file under the same name in another form
            files[nfc] = f"{info.size} {info.tag}" if info.tag else info.size
            if nfc != name:
                listed[nfc] = name
            if info.identity is not None:
                first = named.setdefault(info.identity, name)
                if first != name:
                    links[first] = links[name] = first
        logger.debug(
            "attachment index: %d files under %s, %d names of linked files",
            len(files),
            prefix,
            len(links),
        )
        return cls(files, links, listed=listed, ambiguous=ambiguous, folders=folders)

    def __len__(self) -> int:
        return len(self._files)

    def lookup(self, raw: str, *, max_message_bytes: int | None = None) -> Lookup:
        """Check ``raw`` (a CSV cell) and find it; the problem names what to fix."""
        name = raw.strip()
        if not name.isascii():
            name = unicodedata.normalize("NFC", name)
        if not name:
            return Lookup(problem="Attachment_File is empty")
        problem = name_problem(name)
        if problem:
            return Lookup(problem=problem)

        entry = self._files.get(name)
        if name in self._ambiguous:
            return Lookup(
                problem=(
                    f"two files in the attachments location are named {name} (one of the names"
                    " in another Unicode form, as macOS and Windows write accents): which one"
                    " this row means cannot be told; rename one of them"
                )
            )
        if entry is None and name in self._folders:
            return Lookup(
                problem=f"{name} is a folder, not a file, in the attachments location: name"
                " the row's file itself (files inside folders there are not sent)"
            )
        if entry is None:
            by_name, by_stem = self._variants()
            loose = _loose(name)
            hints = by_name.get(loose) or by_stem.get(_stem(loose), [])
            hint = f" (did you mean {' or '.join(sorted(hints))}?)" if hints else ""
            return Lookup(problem=f"{ATTACHMENT_NOT_FOUND}: {name}{hint}")
        if isinstance(entry, int):
            size, tag = entry, ""
        else:
            digits, _, tag = entry.partition(" ")
            size = int(digits)
        if size == 0:
            return Lookup(problem=f"attachment is empty (0 bytes): {name}")
        if max_message_bytes is not None:
            estimate = encoded_size(size) + message_overhead(max_message_bytes)
            if estimate > max_message_bytes:
                return Lookup(
                    problem=(
                        f"attachment too large: {name} is {_size(size)}, about {_size(estimate)} "
                        f"as an encoded message; the limit is {_size(max_message_bytes)}"
                    )
                )
        return Lookup(name=self._listed.get(name, name), size=size, tag=tag)

    def same_file(self, name: str) -> str | None:
        """For a name of a file listed under several names, the first of them; else None."""
        return self._links.get(name) if self._links else None

    def by_size(self, sizes: Collection[int]) -> dict[int, list[str]]:
        """The files of each of ``sizes``, by their names as listed (one name of a file listed
        under several: the first); one pass over the index. A name two files have in other
        Unicode forms is left out: its rows are rejected, and which file it means is unknown."""
        groups: dict[int, list[str]] = {}
        for name, entry in self._files.items():
            size = entry if isinstance(entry, int) else int(entry.partition(" ")[0])
            if size not in sizes or name in self._ambiguous:
                continue
            listed = self._listed.get(name, name)
            if self.same_file(listed) not in (None, listed):
                continue
            groups.setdefault(size, []).append(listed)
        return groups

    def sizes(self) -> set[int]:
        """The sizes of the files listed, each once."""
        return {
            entry if isinstance(entry, int) else int(entry.partition(" ")[0])
            for entry in self._files.values()
        }

    def size(self, listed: str) -> int | None:
        """The size of the file listed as ``listed`` (None: not listed, or under a name two
        files have in other Unicode forms), without lookup's checks of a cell."""
        name = listed if listed.isascii() else unicodedata.normalize("NFC", listed)
        entry = self._files.get(name)
        if entry is None or name in self._ambiguous:
            return None
        return entry if isinstance(entry, int) else int(entry.partition(" ")[0])

    def tag(self, listed: str) -> str:
        """The version tag the listing gave the file listed as ``listed`` ("" for none)."""
        name = listed if listed.isascii() else unicodedata.normalize("NFC", listed)
        entry = self._files.get(name, 0)
        return "" if isinstance(entry, int) else entry.partition(" ")[2]

    def _variants(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Names by their loose form (_loose: case, quotes, spaces), and by that form without
        its extension (a cell naming ``greta-berg`` or ``greta-berg.docx`` for
        ``greta-berg.pdf``); built at the first miss (most runs never miss)."""
        if self._folded is None:
            self._folded, self._stems = {}, {}
            for name in self._files:
                folded = _loose(name)
                self._folded.setdefault(folded, []).append(name)
                self._stems.setdefault(_stem(folded), []).append(name)
        return self._folded, self._stems


# Quotes a keyboard, a word processor or a phone may write for one another.
_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'}
)
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_EXTENSION = re.compile(r" \.(?=[^.]*$)")


def _loose(name: str) -> str:
    """``name`` as a did-you-mean compares it: NFC, case-folded, curly quotes straight, spaces
    single and none at its ends or before its extension ("Jane  Doe .PDF" is "jane doe.pdf")."""
    text = unicodedata.normalize("NFC", name).translate(_QUOTES).casefold()
    return _SPACE_BEFORE_EXTENSION.sub(".", _SPACES.sub(" ", text).strip())


def _stem(name: str) -> str:
    """``name`` without its extension (``a.pdf`` -> ``a``; ``a`` and ``.pdf`` as they are)."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def _size(count: int) -> str:
    """Format a byte count for people (binary units, as SES quotes its limits)."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"
