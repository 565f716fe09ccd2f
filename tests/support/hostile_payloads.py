"""Small bodies that expand into huge ones, for the tests and benchmarks/load_serve.py: what a
hostile client sends to ``fsd serve``, and a probe of the server's memory."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path


def parquet_bomb(mib: int = 200) -> bytes:
    """A few KB of parquet: one ``audio`` value of ``mib`` MiB of zeros, zstd."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"audio": pa.array([bytes(mib * 2**20)], pa.binary())}), buf,
                   compression="zstd")
    return buf.getvalue()


def flac_bomb(seconds: int = 59, rate: int = 655_350, channels: int = 8) -> bytes:
    """A few hundred KB of FLAC (zeros) that decodes to seconds x rate x channels float32
    (1.24 GB with the defaults)."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    block = np.zeros((1 << 20, channels), dtype=np.int16)
    with sf.SoundFile(buf, "w", samplerate=rate, channels=channels, format="FLAC",
                      subtype="PCM_16") as f:
        left = seconds * rate
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (NaN when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _varint(n: int, width: int = 0) -> bytes:
    """``n`` as a varint of at least ``width`` bytes (redundant continuation bytes are valid:
    readers take up to 10)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n or len(out) + 1 < width:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _patch_varint_field(buf: bytearray, start: int, end: int, header: int, old: int,
                        new: int) -> int:
    """Replace the first thrift compact field ``header`` + varint(zigzag(old)) in
    ``buf[start:end]`` by one of the same length holding ``new``; returns how many."""
    pattern = bytes([header]) + _varint(_zigzag(old))
    at = bytes(buf).find(pattern, start, end)
    if at < 0:
        return 0
    width = len(pattern) - 1
    repl = _varint(_zigzag(new), width)
    if len(repl) != width:
        raise ValueError("the new value does not fit the old one's bytes")
    buf[at + 1:at + 1 + width] = repl
    return 1


def parquet_lying_footer(mib: int = 200, claim: int = 1000) -> bytes:
    """A parquet bomb whose footer claims each column chunk decodes to ``claim`` bytes; its
    page header still says ``mib`` MiB (what a reader believes)."""
    import struct

    import pyarrow.parquet as pq

    body = bytearray(parquet_bomb(mib))
    meta = pq.ParquetFile(io.BytesIO(bytes(body))).metadata
    n = struct.unpack("<i", bytes(body[-8:-4]))[0]
    start, end = len(body) - 8 - n, len(body) - 8
    done = 0
    for g in range(meta.num_row_groups):
        col = meta.row_group(g).column(0)
        # ColumnMetaData field 6 (total_uncompressed_size, i64) follows field 5: header 0x16
        done += _patch_varint_field(body, start, end, 0x16, col.total_uncompressed_size, claim)
        # RowGroup field 2 (total_byte_size, i64) follows field 1 (the list): header 0x16 too
        done += _patch_varint_field(body, start, end, 0x16, meta.row_group(g).total_byte_size,
                                    claim)
    if not done:
        raise RuntimeError("footer field not found")
    return bytes(body)


def parquet_lying_page(mib: int = 200, claim: int = 1000) -> bytes:
    """A parquet bomb whose footer and data page header both claim ``claim`` bytes while its
    zstd data decompresses to ``mib`` MiB: a reader must not decode past the claim."""
    import pyarrow.parquet as pq

    body = bytearray(parquet_lying_footer(mib, claim))
    col = pq.ParquetFile(io.BytesIO(parquet_bomb(mib))).metadata.row_group(0).column(0)
    page = col.dictionary_page_offset or col.data_page_offset
    real = col.total_uncompressed_size
    # PageHeader field 2 (uncompressed_page_size, i32) follows field 1: header 0x15
    done = 0
    for pos, size in _page_headers(bytes(body), page, col.total_compressed_size):
        if size > claim:
            done += _patch_varint_field(body, pos, pos + 24, 0x15, size, claim)
    if not done:
        raise RuntimeError(f"no page header above the claim (chunk {real} bytes)")
    return bytes(body)


def _page_headers(body: bytes, start: int, length: int) -> list[tuple[int, int]]:
    """(offset, uncompressed_page_size) of each page header of a column chunk."""
    from fsd.serving.parquet_pages import _Reader

    out, pos = [], start
    while pos < start + length:
        r = _Reader(body, pos, start + length)
        h = r.struct()
        out.append((pos, int(h[2])))
        pos = r.pos + int(h[3])
    return out


def parquet_many_nulls(rows: int = 5_000_000) -> bytes:
    """An honest parquet file of ``rows`` null clips: a few KB of run-length levels whose
    column declares a few bytes uncompressed, and decodes to rows x (offset + object)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"audio": pa.nulls(rows, pa.binary())}), buf, compression="zstd",
                   data_page_size=1 << 30)
    return buf.getvalue()


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` run without the capabilities that let root ignore file modes (so a read-only
    folder is read-only in a test, as it is for a user)."""
    if os.geteuid() != 0:
        return cmd
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]


def trickle(port: int, stop: threading.Event, data: bytes, pause: float = 0.5) -> None:
    """A client that sends ``data`` to 127.0.0.1:``port`` a byte every ``pause`` seconds and
    opens a new connection as soon as the server closes one, until ``stop``."""
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            for b in data:
                if stop.wait(pause):
                    break
                s.sendall(bytes([b]))
        except OSError:
            pass
        finally:
            s.close()
