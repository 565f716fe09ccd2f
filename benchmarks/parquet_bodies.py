"""Memory of reading crafted parquet request bodies, with and without the front's check.

Each body (tests/hostile_payloads.py: a footer that lies about 200 / 1,000 MiB of zstd zeros,
5M null rows) is written once; then a fresh process per body runs ``fsd serve``'s parquet
check (:meth:`fsd.serving.front.Front._check_parquet`) and, when it admits the body, reads it
as MLflow's parquet path does (``pandas.read_parquet``), and prints its RSS before and its
peak. Run it on two checkouts to compare (PYTHONPATH picks the one measured)::

    PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/parquet_bodies.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

PROBE = r"""
import io, os, sys
body = open(sys.argv[1], "rb").read()
import pandas as pd, pyarrow.parquet  # noqa: F401  (loaded before the baseline)
from fsd.serving.front import Front, Refused
def status(key):  # VmHWM: this process's peak (ru_maxrss would carry the parent's over exec)
    with open(f"/proc/{os.getpid()}/status") as fh:
        return int(next(ln for ln in fh if ln.startswith(key)).split()[1]) / 1024
base = status("VmRSS")
try:
    Front(None, max_body_bytes=16 * 2**20)._check_parquet(body)
    verdict = "admitted"
    pd.read_parquet(io.BytesIO(body))
except Refused as exc:
    verdict = f"refused {exc.status}"
peak = status("VmHWM")
print(f"{verdict}; RSS {base:.0f} MB -> peak {peak:.0f} MB (+{peak - base:.0f} MB)")
"""


def main() -> int:
    from hostile_payloads import parquet_lying_footer, parquet_many_nulls

    bodies = {"lying footer, 200 MiB in the page": lambda: parquet_lying_footer(200),
              "lying footer, 1,000 MiB in the page": lambda: parquet_lying_footer(1000),
              "5M null rows": lambda: parquet_many_nulls(5_000_000)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in bodies.items():
            path = Path(tmp) / "body.parquet"
            path.write_bytes(build())
            done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                                  text=True, timeout=600, cwd=tmp)  # fsd from PYTHONPATH
            out = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
            print(f"{name} ({path.stat().st_size:,} B): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
