"""The benchmarks' record: one JSON line per run appended to ``benchmarks/results/*.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path


def append_result(path: Path, record: dict) -> None:
    """Append ``record`` (stamped with the date unless it has one) as one JSON line."""
    record.setdefault("date", time.strftime("%Y-%m-%d %H:%M"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
