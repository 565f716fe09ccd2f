"""Plot docs/evidence/esc10_fold0_stage1_curves.csv (measured stage-1 runs on ESC-10 fold 0)
as validation MAP@3 against optimiser steps: docs/evidence/esc10_fold0_stage1_curves.png.

Run: .venv/bin/python docs/evidence/plot_curves.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    curves = pd.read_csv(HERE / "esc10_fold0_stage1_curves.csv")
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for name, run in curves.groupby("run", sort=False):
        ax.plot(run["steps"], run["val_map3"], marker="o", ms=3, label=name)
    ax.axhline((1 + 1 / 2 + 1 / 3) / 10, color="grey", ls=":", label="chance (10 classes)")
    ax.set(xlabel="optimiser steps (batch 32)", ylabel="validation MAP@3 (fold 0, inference mode)",
           title="ESC-10 fold 0, stage 1 (log-mel only) from scratch", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "esc10_fold0_stage1_curves.png", dpi=110)
