"""Hyper-parameter sweeps: an Optuna study over mixup alpha and the crop limits.

``fsd.sweep.study`` is the study itself (search space, objective, storage, pruning) and knows
nothing of MLflow; ``fsd.sweep.export`` turns the best trial into a ready-to-run experiment
config; ``fsd.entrypoints.sweep`` is the MLflow edge (one parent run, a nested run per trial).
"""
