"""The best trial as a ready-to-run experiment config.

The written YAML is the sweep's resolved config with the best trial's values set and the
*full* training schedules kept (trials train with the sweep's short ones), so
``fsd main --config <best.yaml>`` trains the winner for real. The config keeps its name, so its
runs land in the same MLflow experiment and reuse the same features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsd.config import Config, dump_config, load_config
from fsd.sweep.study import apply_params


def best_config(cfg: Config, params: dict[str, Any]) -> Config:
    """``cfg`` with the best params set; schedules, folds and everything else as they were."""
    return apply_params(cfg, params)


def render(cfg: Config, params: dict[str, Any], *, header: str = "") -> str:
    """The YAML text: a comment header saying where it came from, then the resolved config."""
    lines = [f"# {line}" if line else "#" for line in header.strip().splitlines()]
    lines += ["# best params:"] + [f"#   {k}: {v}" for k, v in params.items()]
    return "\n".join(lines) + "\n" + dump_config(best_config(cfg, params))


def write_best_config(cfg: Config, params: dict[str, Any], path: str | Path, *,
                      header: str = "") -> Path:
    """Write the best config to ``path`` and check that ``load_config`` accepts it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(cfg, params, header=header))
    loaded = load_config(tmp)  # raises ConfigError before a broken file replaces a good one
    for key, value in params.items():
        if loaded.flat()[key] != value:
            raise RuntimeError(f"{key} reads back as {loaded.flat()[key]!r}, not {value!r}")
    tmp.replace(path)
    return path
