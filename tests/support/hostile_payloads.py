"""Small bodies that expand into huge ones, for the tests and benchmarks/load_serve.py: what a
hostile client sends to ``fsd serve``, and a probe of the server's memory."""

from __future__ import annotations

import io
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
