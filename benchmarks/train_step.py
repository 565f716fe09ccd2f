"""Training throughput of the small-data CNN: float32 (the baseline) against mixed bfloat16
(``model.precision``), and one process against two side by side (``train.fold_workers``).

Each variant runs in its own process (the dtype policy and thread pools are per process), on
the configs' network (experiments/esc10.yaml's model) with random batches of the configs'
shape: 32 clips x 225 frames x 64 mel bands. Prints samples/s and the ratio to float32 in one
process.

    .venv/bin/python benchmarks/train_step.py            # ~2 min on 2 cores
    .venv/bin/python benchmarks/train_step.py --steps 40
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = "--child"


def child(precision: str, steps: int, frames: int) -> None:
    import keras
    import numpy as np

    from fsd.config import load_config
    from fsd.model.networks import build_network

    cfg = load_config("experiments/esc10.yaml", [f"model.precision={precision}"])
    model = build_network(cfg.model, 10, cfg.logmel.n_mels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((32, frames, cfg.logmel.n_mels, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)]
    for _ in range(3):  # tracing and warm-up
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    print(f"{steps * 32 / (time.perf_counter() - t0):.1f}", flush=True)


def run(precision: str, steps: int, frames: int, processes: int, threads: int) -> float:
    """Total samples/s of ``processes`` identical trainings started together."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads:
        env |= {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
                "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, CHILD, precision, str(steps), str(frames)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    rates = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(rates)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per process")
    p.add_argument("--frames", type=int, default=225, help="crop length (frames)")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    base = run("float32", args.steps, args.frames, 1, 0)
    rows = [("float32, 1 process (baseline)", base),
            ("mixed_bfloat16, 1 process", run("mixed_bfloat16", args.steps, args.frames, 1, 0)),
            (f"mixed_bfloat16, 2 processes x {max(1, cores // 2)} threads (total)",
             run("mixed_bfloat16", args.steps, args.frames, 2, max(1, cores // 2)))]
    print(f"{'variant':<48} {'samples/s':>10} {'ratio':>7}")
    for name, rate in rows:
        print(f"{name:<48} {rate:>10.1f} {rate / base:>6.2f}x")


if __name__ == "__main__":
    main()
