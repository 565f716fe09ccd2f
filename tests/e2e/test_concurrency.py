"""Writers racing on one thing: two featurize runs on one store, two ensembles on one alias."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fsd.locks import LockTimeout, file_lock

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["data.synthetic_clips_per_class=2", "pca.n_components=4", "folds.n_folds=2",
             "store.workers=1"]

# A featurize in its own process that starts only once the gate file exists (imports done),
# so two of them really call featurize() at the same moment.
_RACER = textwrap.dedent("""
    import json, logging, sys, time
    from pathlib import Path
    logging.basicConfig(level=logging.INFO)
    from fsd.config import from_dict
    from fsd.features.featurize import featurize
    cache, gate, out = sys.argv[1:4]
    cfg = from_dict({"name": "race"}, %r + [f"store.cache_dir={cache}"])
    while not Path(gate).exists():
        time.sleep(0.01)
    r = featurize(cfg, progress=False)
    Path(out).write_text(json.dumps({"reused": r.reused, "dir": str(r.store_dir),
                                     "n": len(r.store)}))
""") % (OVERRIDES,)


def test_two_featurize_runs_racing_on_one_store_build_it_once(tmp_path):
    from fsd.features.store import FeatureStore

    gate = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path / "cache"), str(gate),
                               str(tmp_path / f"out{i}.json")], env=env, cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    time.sleep(0.5)
    gate.touch()
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert outs[0]["dir"] == outs[1]["dir"]
    # one built it, the other waited for the lock and found it complete
    assert sorted(o["reused"] for o in outs) == [False, True], outs
    assert any("is locked by pid" in e for e in errs), errs
    store = FeatureStore.open(outs[0]["dir"])
    assert len(store) == outs[0]["n"] == outs[1]["n"] > 0
    assert not list(Path(outs[0]["dir"]).rglob(".*.tmp-*"))


def test_file_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
         "from fsd.locks import file_lock\n"
         "with file_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)",
         str(lock), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match="pid"):
            with file_lock(lock, timeout=0.5):
                pass
        holder.kill()  # a kill -9 releases the lock: the kernel drops it with the process
        holder.wait(timeout=10)
        with file_lock(lock, timeout=5):
            pass
    finally:
        holder.kill()
        holder.wait()


# --- two ensembles racing on the champion alias -----------------------------------------


@pytest.fixture
def registry(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    mlflow.set_experiment("alias-race")

    class Const(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    def log_one() -> str:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="m", python_model=Const(), pip_requirements=[])
        return info.model_uri

    return log_one


def test_two_ensembles_racing_on_the_alias_leave_it_on_the_better(registry, monkeypatch):
    from mlflow.tracking import MlflowClient

    from fsd.serving import registry as pyfunc

    name = "race-test"
    pyfunc.register_and_promote(registry(), name, "champion", 0.5)
    uris = {"better": registry(), "worse": registry()}
    # Widen the window between reading the holder and moving the alias: unguarded, both read
    # v1 (0.5), both decide to move, and the worse one, moving last, would keep the alias.
    real = pyfunc.holder_score
    delays = {"better": 0.2, "worse": 1.5}

    def slow_holder_score(client, mv):
        time.sleep(delays[threading.current_thread().name])
        return real(client, mv)

    monkeypatch.setattr(pyfunc, "holder_score", slow_holder_score)
    results, errors = {}, []

    def promote(who: str, score: float) -> None:
        try:
            results[who] = pyfunc.register_and_promote(uris[who], name, "champion", score)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(w, s), name=w)
               for w, s in (("worse", 0.8), ("better", 0.9))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    client = MlflowClient()
    holder = client.get_model_version_by_alias(name, "champion")
    assert str(holder.version) == results["better"].version
    assert sum(r.moved for r in results.values()) in (1, 2)
    # the lock is gone from the registry
    names = [m.name for m in client.search_registered_models()]
    assert names == [name], names


def test_a_lock_left_by_a_dead_process_is_broken(registry):
    import socket

    from mlflow.tracking import MlflowClient

    from fsd.serving import registry as pyfunc
    from fsd.tracking.tags import TAG_LOCK_OWNER

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = MlflowClient()
    client.create_registered_model(pyfunc.lock_model_name("stale-test", "champion"),
                                   tags={TAG_LOCK_OWNER: f"{socket.gethostname()}:{dead.pid}"})
    promo = pyfunc.register_and_promote(registry(), "stale-test", "champion", 0.7)
    assert promo.moved
    assert [m.name for m in client.search_registered_models()] == ["stale-test"]


def test_a_sweep_worker_survives_its_trial_being_failed_by_another(tmp_path):
    """On a starved machine another worker may declare a live trial's heartbeat stale and
    mark it FAIL; the live worker must go on with its next trial, not die."""
    import optuna
    from optuna.trial import TrialState

    from fsd.sweep import study

    url = f"sqlite:///{tmp_path}/optuna.db"
    opt = optuna.create_study(storage=study.make_storage(url), study_name="s")
    other = study.make_storage(url)  # the other worker's connection

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:
            other.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            trial.report(0.5, 0)  # this worker does not know yet: Optuna refuses the update
        return 0.7

    study.optimize(opt, objective, n_trials=2, timeout=None)
    states = [t.state for t in opt.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]
