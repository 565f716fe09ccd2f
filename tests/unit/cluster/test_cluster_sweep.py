"""``fsd sweep --executor ray`` without Ray: the trials shared out, the plain worker command,
a sqlite study refused on many nodes, a password taken out of the URL."""

from __future__ import annotations

import pytest

from fsd.cluster.commands import sweep_command
from fsd.cluster.sweep import check_storage, password_env, share_trials
from fsd.config import ConfigError


def test_trials_are_shared_out_and_the_worker_runs_the_plain_command(tmp_path):
    assert share_trials(5, 2) == [3, 2]
    assert share_trials(1, 3) == [1]  # no worker without a trial
    assert share_trials(0, 3) == [0, 0, 0]  # a timeout only: each runs until it
    with pytest.raises(ConfigError):
        share_trials(4, 0)
    cmd = sweep_command(tmp_path / "c.yaml", 3, "abc", ["output_dir=/x"])
    assert cmd[1:] == ["-m", "fsd", "sweep", "--config", str(tmp_path / "c.yaml"),
                       "--executor", "local", "--n-trials", "3", "--features-run", "abc",
                       "--set=output_dir=/x"]


def test_a_sqlite_study_is_refused_on_many_nodes_and_passwords_leave_the_url():
    check_storage("sqlite:////tmp/x/optuna.db", 1)  # one node: one disk, fine
    with pytest.raises(ConfigError, match="cannot share"):
        check_storage("sqlite:////tmp/x/optuna.db", 2)
    check_storage("postgresql+psycopg2://fsd@db:5432/optuna", 2)
    url, env = password_env("postgresql+psycopg2://fsd:s3cret@db:5432/optuna")
    assert url == "postgresql+psycopg2://fsd@db:5432/optuna" and env == {"PGPASSWORD": "s3cret"}
    assert password_env("postgresql+psycopg2://fsd@db/optuna") == (
        "postgresql+psycopg2://fsd@db/optuna", {})
