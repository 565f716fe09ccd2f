"""The Optuna sweep: search space, storage, export of the best config, importances."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from sweep_stand_ins import scripted_train, sweep_config

from fsd.config import Config, ConfigError, SweepConfig, load_config
from fsd.sweep import export, study

optuna.logging.set_verbosity(optuna.logging.WARNING)


SPACES = [
    {},  # the defaults: crop ranges touch at 400
    {"crop_min_low": 50, "crop_min_high": 150, "crop_max_low": 200, "crop_max_high": 400},
    {"crop_min_low": 100, "crop_min_high": 900, "crop_max_low": 50, "crop_max_high": 901},
    {"crop_min_low": 10, "crop_min_high": 10, "crop_max_low": 11, "crop_max_high": 11},
    {"alpha1_min": 0.0, "alpha1_max": 1.0, "alpha2_min": 0.4, "alpha2_max": 0.4},
]


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_search_space_keeps_min_below_max(tmp_path, space, sampler):
    sw = sweep_config(tmp_path, **space).sweep
    seen = []

    def objective(trial: optuna.Trial) -> float:
        p = study.suggest_params(trial, sw)
        seen.append(p)
        return -abs(p[study.CROP_MAX] - p[study.CROP_MIN] - 100) + p[study.ALPHA1]

    s = optuna.samplers.RandomSampler(seed=1) if sampler == "random" else \
        optuna.samplers.TPESampler(seed=1, n_startup_trials=5)
    optuna.create_study(direction="maximize", sampler=s).optimize(objective, n_trials=60)
    for p in seen:
        assert sw.crop_min_low <= p[study.CROP_MIN] <= sw.crop_min_high
        assert p[study.CROP_MIN] < p[study.CROP_MAX] <= sw.crop_max_high
        assert p[study.CROP_MAX] >= sw.crop_max_low
        assert isinstance(p[study.CROP_MIN], int) and isinstance(p[study.CROP_MAX], int)
        assert sw.alpha1_min <= p[study.ALPHA1] <= sw.alpha1_max
        assert sw.alpha2_min <= p[study.ALPHA2] <= sw.alpha2_max
        # every sample is a config that validates
        study.trial_config(sweep_config(tmp_path, **space), p)


def test_alpha_is_searched_on_a_log_scale_only_when_it_can_be(tmp_path):
    trial = optuna.create_study().ask()
    study.suggest_params(trial, SweepConfig(alpha1_min=0.0, alpha1_max=1.0))
    assert not trial.distributions[study.ALPHA1].log
    assert trial.distributions[study.ALPHA2].log


@pytest.mark.parametrize("bad, match", [
    ({"alpha1_min": 2.0, "alpha1_max": 1.0}, "alpha1_min"),
    ({"crop_min_low": 0}, "crop_min_low"),
    ({"crop_max_low": 900, "crop_max_high": 800}, "crop_max_low"),
    ({"folds": [0, 5]}, "outside"),
    ({"cyclic_epochs": 0, "plateau_low_epochs": 0, "plateau_high_epochs": 0}, "at least one"),
])
def test_unusable_sweep_sections_are_refused(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        study.check_space(sweep_config(tmp_path, **bad))


def test_trials_train_short_schedules_and_the_best_config_keeps_the_full_ones(tmp_path):
    cfg = sweep_config(tmp_path, cyclic_epochs=2, plateau_low_epochs=1, plateau_high_epochs=0)
    params = {study.ALPHA1: 0.7, study.ALPHA2: 0.3, study.CROP_MIN: 120, study.CROP_MAX: 480}
    t = study.trial_config(cfg, params)
    for st in (t.train.stage1, t.train.stage2):
        assert (st.cyclic_epochs, st.plateau_low_epochs, st.plateau_high_epochs) == (2, 1, 0)
    assert (t.train.crop_min, t.train.crop_max, t.train.stage1.mixup_alpha) == (120, 480, 0.7)
    assert cfg.train.crop_min == 0  # the sweep's own config is untouched

    path = export.write_best_config(cfg, params, tmp_path / "best.yaml", header="trial 3\nof t")
    text = path.read_text()
    assert text.startswith("# trial 3\n# of t\n")
    best = load_config(path)
    assert best.name == "t"
    assert (best.train.crop_min, best.train.crop_max) == (120, 480)
    assert (best.train.stage1.mixup_alpha, best.train.stage2.mixup_alpha) == (0.7, 0.3)
    assert best.train.stage1.cyclic_epochs == Config().train.stage1.cyclic_epochs == 100
    assert best.to_dict() == study.apply_params(cfg, params).to_dict()


def test_default_storage_is_a_sqlite_file_beside_the_experiment(tmp_path):
    cfg = sweep_config(tmp_path)
    url = study.storage_url(cfg)
    assert url == f"sqlite:///{(tmp_path / 'out' / 't' / 'sweep' / 'optuna.db').resolve()}"
    assert study.study_name(cfg) == "t-sweep"
    storage = study.make_storage(url)
    assert (tmp_path / "out" / "t" / "sweep").is_dir()
    assert storage.heartbeat_interval is None  # one local worker: no heartbeat thread
    beating = study.make_storage(f"sqlite:///{tmp_path}/hb.db", heartbeat=True)
    assert beating.heartbeat_interval == study.HEARTBEAT_S
    assert beating.heartbeat_stale_trial_callback is not None


def test_storage_passwords_never_reach_logs():
    assert study.redact("postgresql://me:s3cret@db:5432/optuna") == "postgresql://me@db:5432/optuna"
    assert study.redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert not study.is_sqlite("postgresql+psycopg2://db/x") and study.is_sqlite("sqlite:///x.db")


def test_reopening_a_study_continues_it_with_a_fresh_sampler_seed(tmp_path):
    cfg = sweep_config(tmp_path)
    first = study.open_study(cfg)
    first.optimize(lambda t: study.suggest_params(t, cfg.sweep)[study.ALPHA1], n_trials=2)
    again = study.open_study(cfg)
    assert len(again.trials) == 2 and again.study_name == "t-sweep"
    again.optimize(lambda t: study.suggest_params(t, cfg.sweep)[study.ALPHA1], n_trials=1)
    trials = study.open_study(cfg).trials
    assert len(trials) == 3
    # a rerun does not replay the first run's random start-up samples
    assert trials[2].params != trials[0].params


def test_workers_sharing_a_server_storage_draw_different_samples(tmp_path):
    cfg = sweep_config(tmp_path, seed=7)
    opt = optuna.create_study()
    assert study.sampler_seed(cfg, opt, "sqlite:///x.db") == 7
    assert study.sampler_seed(cfg, opt, optuna.storages.InMemoryStorage()) == 7
    shared = SimpleNamespace(url="postgresql://db/optuna")
    assert study.sampler_seed(cfg, opt, shared) != 7


def test_importances_need_two_completed_trials_that_differ(tmp_path):
    cfg = sweep_config(tmp_path, pruner="none")
    opt = study.open_study(cfg, optuna.storages.InMemoryStorage())
    objective = study.Objective(cfg, None, tmp_path / "s", train_fn=scripted_train({0: 0.5}, set()))
    study.optimize(opt, objective, n_trials=1, timeout=None)
    plots, notes = study.save_plots(opt, tmp_path / "plots")
    assert set(plots) == {"optimization_history"}
    assert any("param_importances skipped" in n and "2 completed" in n for n in notes)


def test_mlflow_empty_parameters_mean_use_the_config():
    from fsd.cli import build_parser

    args, _ = build_parser().parse_known_args(["sweep", "--n-trials", "", "--timeout", ""])
    assert (args.n_trials, args.timeout) == (None, None)
    args, _ = build_parser().parse_known_args(["sweep", "--n-trials", "4", "--timeout", "2.5"])
    assert (args.n_trials, args.timeout) == (4, 2.5)
