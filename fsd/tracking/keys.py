"""The keys that say whether two runs did the same work: pure functions of a Config."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json

from fsd.config import Config
from fsd.features import STORE_SECTIONS

# Sections that define the features; train keys add the model and training sections.
FEATURE_SECTIONS = ("data",) + STORE_SECTIONS
TRAIN_SECTIONS = FEATURE_SECTIONS + ("pca", "model", "train")


def feature_key(cfg: Config) -> str:
    return cfg.section_key(*FEATURE_SECTIONS)


def train_key(cfg: Config) -> str:
    """Identifies one training recipe across its folds (the fold number itself, and the number
    of folds trained at once, excluded). ``cfg`` is left as it is."""
    recipe = copy.copy(cfg)  # shallow: only its train section is replaced below
    recipe.train = dataclasses.replace(cfg.train, fold=0, fold_workers=1)
    return recipe.section_key(*TRAIN_SECTIONS)


def baseline_key(cfg: Config, name: str) -> str:
    """Identifies baseline ``name``'s settings (only its own: another model's change, or the
    list of models, does not make a finished run stale). The data, features and folds are the
    store key's part."""
    from fsd.baseline.model import model_params

    payload = json.dumps(model_params(name, cfg.baseline), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
