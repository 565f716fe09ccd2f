"""Variable-length MobileNetV2, the mel and mel+PCA networks, stage transfer, crop offsets.

``fsd.model.inference`` needs only numpy; the network modules import Keras (and with it the
backend), so they are loaded on first use rather than with the package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_mel_branch": "fsd.model.networks",
    "build_network": "fsd.model.networks",
    "transfer_mel_branch": "fsd.model.networks",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fsd.model' has no attribute {name!r}")
