"""Reading one extract file in Python: its encoding, its header, and what PostgreSQL's COPY cannot take.

The loader sends a file to PostgreSQL's own CSV ``COPY`` as it is (:mod:`tierline.load`). Python
reads it once beforehand, at the speed of ``bytes.count``, to detect the encoding and to find
what that ``COPY`` could not carry: bytes that are not in the file's encoding and control
characters (a NUL cannot be stored at all). Such a file, or one whose ``COPY`` fails (a row with
the wrong number of fields, an unclosed quote, a blank line, line ends that mix CRLF and LF), is
parsed here instead, record by record (:func:`records`), so that each bad record
is quarantined with its exact physical line and raw text and every good one still loads.

Line numbers are physical lines of the file, the header being line 1. A record whose quoted field
holds a line break spans several lines and is numbered by its first.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tierline import contract
from tierline.errors import ExtractError

CHUNK = 4 * 1024 * 1024
# C0 control characters other than tab, line feed and carriage return: no text export has them.
CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
# A quoted field may span lines; an unclosed quote must not swallow the rest of the file.
MAX_RECORD_LINES = 1000
# How many non-UTF-8 lines are looked at to tell GB18030 text from stray bytes in a UTF-8 file.
SAMPLE_LINES = 2000
LABEL = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "gb18030": "GB18030"}


@dataclass
class FileShape:
    encoding: str  # utf-8 | utf-8-sig | gb18030
    header: list[str]
    positions: dict[str, int]  # contract column -> 1-based field position
    ignored_columns: list[str]
    data_lines: int  # physical lines after the header
    bad_lines: dict[int, str] = field(default_factory=dict)  # line -> why it cannot be decoded
    fallback: str | None = None  # why the file must be parsed here rather than by COPY

    @property
    def codec(self) -> str:
        """The codec of every line but the first (a byte-order mark only starts the file)."""
        return "utf-8" if self.encoding == "utf-8-sig" else self.encoding


@dataclass
class Record:
    line_no: int
    span: int  # physical lines
    fields: list[str] | None  # None: the record is bad
    raw_text: str = ""
    reason: str = ""


# ---------------------------------------------------------------------------------------------
# Encoding and shape


@dataclass
class _Scan:
    lines: int = 0
    lf: int = 0
    control: bool = False
    utf8: bool = True
    bom: bool = False


def _scan(path: Path) -> _Scan:
    scan = _Scan()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size, last = 0, b""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if not size:
                scan.bom = chunk.startswith(codecs.BOM_UTF8)
            scan.lf += chunk.count(b"\n")
            scan.control = scan.control or CONTROL_BYTES.search(chunk) is not None
            if scan.utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    scan.utf8 = False
            size += len(chunk)
            last = chunk[-1:]
    if scan.utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            scan.utf8 = False
    scan.lines = scan.lf + (1 if size and last != b"\n" else 0)
    return scan


def _undecodable(line: bytes, codec: str) -> str | None:
    try:
        line.decode(codec)
    except UnicodeDecodeError as exc:
        return (f"bytes that are not {LABEL[codec]}: {line[exc.start:exc.end + 2].hex(' ')} at byte {exc.start + 1} "
                "of the line")
    return None


def _bad_lines(path: Path, codec: str) -> tuple[dict[int, str], int, list[bytes]]:
    """Lines that do not decode; how many non-ASCII lines do; a sample of the bad ones."""
    bad, decodable, sample = {}, 0, []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.isascii():
                continue
            problem = _undecodable(line, codec)
            if problem is None:
                decodable += 1
            else:
                bad[number] = problem
                if len(sample) < SAMPLE_LINES:
                    sample.append(line)
    return bad, decodable, sample


def _looks_like_gb18030(sample: list[bytes]) -> bool:
    """Whether lines that are not UTF-8 read as Chinese text in GB18030.

    GB18030 decodes almost any byte soup, so decoding is no proof: a Latin-1 ``é`` followed by a
    letter is a valid (rare) GBK character. Real Chinese text is overwhelmingly made of the
    characters of GB2312's region, whose two bytes are both 0xA1 or above; stray bytes are not.
    """
    common = rare = 0
    for line in sample:
        try:
            text = line.decode("gb18030")
        except UnicodeDecodeError:
            rare += 1
            continue
        for char in text:
            if char.isascii():
                continue
            encoded = char.encode("gb18030")
            if len(encoded) == 2 and encoded[0] >= 0xA1 and encoded[1] >= 0xA1:
                common += 1
            else:
                rare += 1
    return common > rare


def detect_encoding(path: Path, name: str) -> tuple[str, dict[int, str], _Scan]:
    """The file's encoding and its lines that do not decode in it.

    UTF-8 (with or without a byte-order mark) when the file decodes as UTF-8, or when it has at
    least as many non-ASCII lines that decode as UTF-8 as lines that do not (a UTF-8 file with a
    few stray bytes: those lines are quarantined). GB18030 (which covers GBK) only when the lines
    that are not UTF-8 read as Chinese text in it and fewer lines fail in it than in UTF-8.
    """
    scan = _scan(path)
    if scan.utf8:
        return ("utf-8-sig" if scan.bom else "utf-8"), {}, scan
    utf8_bad, utf8_good, sample = _bad_lines(path, "utf-8")
    if scan.bom or utf8_good >= len(utf8_bad) or not _looks_like_gb18030(sample):
        return ("utf-8-sig" if scan.bom else "utf-8"), utf8_bad, scan
    gb_bad, _, _ = _bad_lines(path, "gb18030")
    if len(gb_bad) < len(utf8_bad):
        return "gb18030", gb_bad, scan
    return "utf-8", utf8_bad, scan


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline()


def _tail(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(size - 65536, 0))
        return handle.read()


def inspect(path: Path, entity: contract.Entity) -> FileShape:
    """Check that a file is readable under the contract; raise ExtractError naming the problem."""
    name = entity.file_name
    if path.stat().st_size == 0:
        raise ExtractError(f"{name}: the file is empty (no header line)")
    encoding, bad_lines, scan = detect_encoding(path, name)
    if 1 in bad_lines:
        raise ExtractError(f"{name}, line 1 (the header): {bad_lines[1]}; re-export the file as UTF-8 or GB18030")
    first_line = _first_line(path).decode(encoding)
    header = next(csv.reader([first_line.lstrip("\ufeff").rstrip("\r\n")]), [])
    names = [h.strip().strip("\u3000").lower() for h in header]
    missing = [c for c in entity.required if c not in names]
    if missing:
        for delimiter in (";", "\t", "|"):
            if len(names) == 1 and delimiter in first_line:
                raise ExtractError(f"{name}: the header is delimited by {delimiter!r}, the contract requires ','")
        raise ExtractError(
            f"{name}: missing required column(s) {', '.join(missing)}; header has {', '.join(names) or 'nothing'}")
    known = {c.name for c in entity.columns}
    duplicated = sorted({n for n in names if names.count(n) > 1 and n in known})
    if duplicated:
        raise ExtractError(f"{name}: column(s) {', '.join(duplicated)} appear more than once")
    tail = _tail(path)
    if tail and not tail.endswith(b"\n"):
        last = tail.rsplit(b"\n", 1)[-1].decode(encoding, errors="replace")
        if last.count('"') % 2 or len(next(csv.reader([last]), [])) < len(names):
            raise ExtractError(
                f"{name}, line {scan.lines}: the file is truncated: its last line has no line end and is "
                f"incomplete ({last[:60]!r}); re-send the whole file")
    fallback = None
    if bad_lines:
        fallback = f"{len(bad_lines)} line(s) are not {LABEL[encoding]}"
    elif scan.control:
        fallback = "control characters"
    return FileShape(
        encoding=encoding, header=names,
        positions={n: i + 1 for i, n in enumerate(names) if n in known},
        ignored_columns=[n for n in names if n not in known],
        data_lines=max(scan.lines - 1, 0), bad_lines=bad_lines, fallback=fallback)


# ---------------------------------------------------------------------------------------------
# Records, for the files COPY refuses


def _printable(text: str) -> str:
    """Raw text as PostgreSQL can store it (a NUL cannot be; it is shown as \\x00)."""
    return text.replace("\x00", "\\x00")


def _strip_end(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
    return text[:-1] if text.endswith("\r") else text


def _control_reason(fields: list[str] | None, text: str, header: list[str]) -> str:
    if fields is not None:
        for position, value in enumerate(fields):
            found = CONTROL_CHARS.search(value)
            if found:
                column = header[position] if position < len(header) else f"field {position + 1}"
                return f"control character U+{ord(found.group()):04X} in {column}"
    found = CONTROL_CHARS.search(text)
    return f"control character U+{ord(found.group()):04X}"


def _parse(text: str) -> list[str] | None:
    try:
        return next(csv.reader([text]), [""])
    except csv.Error:
        return None


def records(path: Path, shape: FileShape) -> Iterator[Record]:
    """Every record of the file after the header, good or bad, with its first physical line."""
    codec, expected = shape.codec, len(shape.header)
    with path.open("rb") as handle:
        lines = enumerate(handle, start=1)
        next(lines, None)
        pending: deque[tuple[int, bytes]] = deque()

        def take() -> tuple[int, bytes] | None:
            return pending.popleft() if pending else next(lines, None)

        while (first := take()) is not None:
            number, raw = first
            if number in shape.bad_lines:
                yield Record(number, 1, None, _printable(_strip_end(raw.decode(codec, "backslashreplace"))),
                             shape.bad_lines[number])
                continue
            text = raw.decode(codec)
            taken = [(number, raw)]
            if text.count('"') % 2:
                # a quoted field goes on: take lines until the quotes balance
                quotes, closed = text.count('"'), False
                while len(taken) < MAX_RECORD_LINES and (following := take()) is not None:
                    taken.append(following)
                    if following[0] in shape.bad_lines:
                        break
                    quotes += following[1].decode(codec).count('"')
                    if quotes % 2 == 0:
                        closed = True
                        break
                if not closed:
                    pending.extendleft(reversed(taken[1:]))
                    yield Record(number, 1, None, _printable(_strip_end(text)),
                                 "malformed CSV quoting (a quote is never closed)")
                    continue
                text = "".join(r.decode(codec) for _, r in taken)
            body = _strip_end(text)
            if body.strip() == "":
                yield Record(number, 1, None, body, "blank line")
                continue
            fields = _parse(body)
            if fields is None or len(fields) != expected:
                if len(taken) > 1:
                    # the quote that opened the span was a stray one: only its line is bad
                    pending.extendleft(reversed(taken[1:]))
                    yield Record(number, 1, None, _printable(_strip_end(taken[0][1].decode(codec))),
                                 "malformed CSV quoting")
                elif fields is None:
                    yield Record(number, 1, None, _printable(body), "malformed CSV quoting")
                else:
                    yield Record(number, 1, None, _printable(body),
                                 f"expected {expected} fields, found {len(fields)}")
                continue
            if CONTROL_CHARS.search(body):
                yield Record(number, len(taken), None, _printable(body), _control_reason(fields, body, shape.header))
                continue
            yield Record(number, len(taken), fields)


def with_raw_texts(path: Path, shape: FileShape, bad: Iterable[tuple[int, int, str | None, str]]
                   ) -> Iterator[tuple[int, str, str]]:
    """(line, raw text, reason) for bad records given in line order as (line, span, raw text or None, reason).

    A record without its raw text gets it from the file: its lines, without the last line end. The
    file is read forward once, whatever the number of records.
    """
    with path.open("rb") as handle:
        lines = enumerate(handle, start=1)
        number, raw = 0, b""
        for line_no, span, text, reason in bad:
            if text is None:
                while number < line_no:
                    number, raw = next(lines)
                taken = [raw]
                while number < line_no + span - 1:
                    number, raw = next(lines)
                    taken.append(raw)
                text = _printable(_strip_end(b"".join(taken).decode(shape.codec, "backslashreplace")))
            yield line_no, text, reason
