"""The rejects report: every clip that was not used, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

# The stage of a row in the rejects report for a clip that was kept, with a warning about it
# (e.g. a truncated WAV whose present part is used). Such rows are not rejects.
WARNING_STAGE = "warning"


@dataclass(frozen=True)
class Reject:
    """One clip (or CSV row) left out, at which stage, and the reason in plain words."""

    fname: str
    stage: str  # "metadata" | "audio" | "features" | "warning" (a kept clip, see WARNING_STAGE)
    reason: str


def rejects_frame(rejects: list[Reject]) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in rejects], columns=["fname", "stage", "reason"])


def write_rejects(rejects: list[Reject], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rejects_frame(rejects).to_csv(path, index=False)
    return path
