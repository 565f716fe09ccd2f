"""What a parquet body really decodes to, read from its page headers before pyarrow sees it.

A parquet file's footer declares each column chunk's sizes, but a reader decodes page by page
and sizes each page's buffer from the page's own header: a body whose footer says "a few KB"
while one page header says "2 GB" grew the server by 2.2 GB when only the footer was checked.
So :func:`decoded_bytes` walks every page of every column chunk (the bytes a reader reads:
from the chunk's first page for its declared compressed length) and adds up what the page
headers declare (``uncompressed_page_size``) plus the per-value cost of the rows they declare
(offsets, validity and a pandas object per value); the front refuses a body over its cap
before any of it is decompressed.

Thrift's compact protocol (what parquet's footer and page headers are written in) is read by
a small bounded decoder: nesting, list lengths and every offset are checked against the body,
so a malformed body is a ``ValueError``, never a large allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"PAR1"
MAX_NESTING = 32
PER_VALUE_BYTES = 24  # an int64 offset, validity, and a pandas object pointer per value
# Thrift compact types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = \
    range(13)


class _Reader:
    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None):
        self.buf, self.pos = buf, pos
        self.end = len(buf) if end is None else min(end, len(buf))

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("truncated thrift data")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        out, shift = 0, 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise ValueError("thrift data runs past its end")
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def value(self, kind: int, depth: int):
        if depth > MAX_NESTING:
            raise ValueError("thrift data nests too deeply")
        if kind in (_TRUE, _FALSE):
            return kind == _TRUE
        if kind == _BYTE:
            return self.byte()
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            return struct.unpack("<d", self.skip(8))[0]
        if kind == _BINARY:
            return self.skip(self.varint())
        if kind in (_LIST, _SET):
            head = self.byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            if size > self.end - self.pos:  # every element takes at least one byte
                raise ValueError("thrift list longer than its data")
            if elem in (_TRUE, _FALSE):
                return [self.byte() == 1 for _ in range(size)]
            return [self.value(elem, depth + 1) for _ in range(size)]
        if kind == _MAP:
            size = self.varint()
            if size == 0:
                return {}
            if size > self.end - self.pos:
                raise ValueError("thrift map longer than its data")
            kv = self.byte()
            return {_key(self.value(kv >> 4, depth + 1)): self.value(kv & 0x0F, depth + 1)
                    for _ in range(size)}
        if kind == _STRUCT:
            return self.struct(depth + 1)
        raise ValueError(f"unknown thrift type {kind}")

    def struct(self, depth: int = 0) -> dict[int, object]:
        fields: dict[int, object] = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == _STOP:
                return fields
            delta = head >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            fields[fid] = self.value(kind, depth)


def _key(k):
    return k if isinstance(k, (int, bytes, bool, float)) else repr(k)


def read_footer(body: bytes) -> dict[int, object]:
    """The parquet footer (FileMetaData) as thrift field id -> value."""
    if len(body) < 12 or body[:4] != MAGIC or body[-4:] != MAGIC:
        raise ValueError("not a parquet file")
    n = struct.unpack("<i", body[-8:-4])[0]
    if n <= 0 or n > len(body) - 12:
        raise ValueError("parquet footer length out of range")
    return _Reader(body, len(body) - 8 - n, len(body) - 8).struct()


@dataclass
class Decoded:
    """What a parquet body's pages declare: bytes once decompressed, values, pages."""

    bytes: int = 0
    values: int = 0
    pages: int = 0
    rows: int = 0


def decoded_bytes(body: bytes, cap: int, max_rows: int) -> Decoded:
    """Walk every page of ``body`` and add what the headers declare; a ValueError as soon as
    the total passes ``cap`` bytes (values counted at :data:`PER_VALUE_BYTES`) or a row count
    anywhere passes ``max_rows`` (both OverflowError), or for anything that is not
    well-formed."""
    meta = read_footer(body)
    out = Decoded(rows=int(meta.get(3, 0) or 0))
    if out.rows < 0 or out.rows > max_rows:
        raise OverflowError(f"more than {max_rows} rows")
    data_end = len(body) - 8 - struct.unpack("<i", body[-8:-4])[0]
    groups = meta.get(4) or []
    if not isinstance(groups, list):
        raise ValueError("malformed row groups")
    for group in groups:
        if not isinstance(group, dict):
            raise ValueError("malformed row group")
        if not 0 <= int(group.get(3, 0) or 0) <= max_rows:
            raise OverflowError(f"a row group of more than {max_rows} rows")
        for chunk in group.get(1) or []:
            md = chunk.get(3) if isinstance(chunk, dict) else None
            if not isinstance(md, dict):
                raise ValueError("a column chunk without metadata")
            if not 0 <= int(md.get(5, 0) or 0) <= max_rows:
                raise OverflowError(f"a column chunk of more than {max_rows} values")
            _walk_chunk(body, md, data_end, cap, max_rows, out)
    return out


def _walk_chunk(body: bytes, md: dict, data_end: int, cap: int, max_rows: int,
                out: Decoded) -> None:
    """The pages a reader reads for one column chunk: from its dictionary page (or first data
    page) for its declared compressed length, each header then its compressed data."""
    first = md.get(11) if md.get(11) else md.get(9)
    length = md.get(7)
    if not isinstance(first, int) or not isinstance(length, int):
        raise ValueError("a column chunk without offsets")
    start, stop = first, first + length
    if start < 4 or length < 0 or stop > data_end:
        raise ValueError("a column chunk outside the file")
    pos = start
    while pos < stop:
        r = _Reader(body, pos, stop)
        page = r.struct()
        size, comp = page.get(2), page.get(3)
        if not isinstance(size, int) or not isinstance(comp, int) or size < 0 or comp < 0:
            raise ValueError("a page header without sizes")
        values = 0
        for fid in (5, 7, 8):  # data page, dictionary page, data page v2: num_values first
            sub = page.get(fid)
            if isinstance(sub, dict) and isinstance(sub.get(1), int):
                values = max(values, sub[1])
        if values < 0 or values > max_rows:
            raise OverflowError(f"a page of more than {max_rows} values")
        out.pages += 1
        out.values += values
        out.bytes += size + PER_VALUE_BYTES * values
        if out.bytes > cap:
            raise OverflowError(f"decodes to more than {cap} bytes")
        pos = r.pos + comp
        if pos > stop:
            raise ValueError("a page runs past its column chunk")
