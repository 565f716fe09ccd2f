"""Stand-ins the sweep tests share: a small sweep config and a scripted train_fold."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fsd.config import Config, from_dict


def sweep_config(tmp_path: Path, **sweep: object) -> Config:
    """A 2-fold config named ``t`` writing under tmp_path, with these sweep settings."""
    return from_dict({"name": "t", "output_dir": str(tmp_path / "out"),
                      "folds": {"n_folds": 2}, "sweep": sweep})


def scripted_train(scores: dict[int, float], failing: set[int]):
    """A stand-in for train_fold: epochs with a per-trial score, or an error."""
    from fsd.sweep import study

    def train(cfg, store, fold, workdir, on_epoch=None, progress=True):
        trial = int(Path(workdir).parent.name.split("_")[1])
        if trial in failing:
            raise RuntimeError("out of memory")
        for stage, st in (("stage1", cfg.train.stage1), ("stage2", cfg.train.stage2)):
            for epoch in range(study.stage_epochs(st)):
                on_epoch(stage, epoch, {"loss": 1.0, "val_loss": 1.0,
                                        "val_map3": scores[trial], "lr": 1e-3})
        return SimpleNamespace(val_map3=scores[trial] + fold * 0.01)

    return train
