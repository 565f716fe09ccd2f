"""Issue 9, hostile input: confined dataset paths, bounded requests, batch-independent answers,
strict failures that stop later steps, killed runs marked KILLED, and the small holes (tiny
and truncated WAVs, the store's dtype, huge float samples). The serving front has its own
module (tests/test_serve_front.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fsd.config import AudioConfig, from_dict
from fsd.data.audio import AudioError, load_audio
from fsd.data.sources import load_dataset
from fsd.processes import process_alive


def write_clip(path: Path, seconds: float = 0.3, freq: float = 440.0, sr: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def wav_bytes(y: np.ndarray, sr: int = 44100, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(y, dtype=np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def folder_cfg(audio_dir, csv, **data):
    return from_dict({"data": {"source": "folder", "audio_dir": str(audio_dir), "csv": str(csv),
                               **data}})


# --- 1. every file a dataset reads lies inside its audio folder ---------------------------


def test_csv_rows_cannot_name_files_outside_the_audio_folder(tmp_path):
    audio = tmp_path / "audio"
    outside = tmp_path / "elsewhere"
    write_clip(audio / "ok.wav")
    write_clip(audio / "sub" / "inner.wav")
    secret = write_clip(outside / "secret.wav")  # real audio: used to become training data
    (outside / "sub").mkdir()
    write_clip(outside / "sub" / "deep.wav")
    os.symlink(secret, audio / "link.wav")  # a link in the folder leading out of it
    os.symlink(outside / "sub", audio / "linkdir")  # a folder link leading out
    os.symlink(audio / "ok.wav", audio / "alias.wav")  # a link that stays inside: fine
    rows = ["ok.wav", "sub/inner.wav", "alias.wav", "../elsewhere/secret.wav", str(secret),
            "/etc/hostname", "../../../../../../etc/passwd", "link.wav", "linkdir/deep.wav",
            "sub/../../elsewhere/secret.wav"]
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\n" + "".join(f"{r},Hum\n" for r in rows))
    ds = load_dataset(folder_cfg(audio, csv))
    assert sorted(ds.train["fname"]) == ["alias.wav", "ok.wav", "sub/inner.wav"]
    real_audio = os.path.realpath(audio)
    for path in ds.train["path"]:
        assert os.path.realpath(path).startswith(real_audio + os.sep)
    reasons = {r.fname: r.reason for r in ds.rejects}
    for i, row in enumerate(rows[3:], start=5):  # data lines start at 2
        assert row in reasons, row
        assert f"meta.csv line {i}" in reasons[row], reasons[row]
        # the reason names the row, never where it resolves to
        assert str(outside) not in reasons[row] and "/etc/" not in reasons[row]
        assert "inside the audio folder" in reasons[row] or "leads outside" in reasons[row]


def test_fsdkaggle2018_test_folder_links_leading_out_are_not_read(tmp_path):
    from test_datasets import make_fsd

    root = make_fsd(tmp_path / "fsd")
    write_clip(root / "FSDKaggle2018.audio_test" / "t_ok.wav")
    secret = write_clip(tmp_path / "secret.wav")
    os.symlink(secret, root / "FSDKaggle2018.audio_test" / "t_link.wav")
    os.symlink(secret, root / "FSDKaggle2018.audio_train" / "a_link.wav")
    ds = load_dataset(from_dict({"data": {"source": "fsdkaggle2018", "root": str(root)}}))
    assert set(ds.test["fname"]) == {"t_ok.wav"}
    assert "a_link.wav" not in set(ds.train["fname"])


# --- 2. the work of a request is bounded as a whole -----------------------------------------


class _Info:
    tta_lengths, tta_crops, top_k, seed = [263, 363, 463, 563, 663, 763], 5, 3, 0
    max_request_clips, max_clip_bytes, max_request_frames = 64, 20_000_000, 0


class _Ensemble:
    """Counts what would be work: decoding (cfg access) and prediction."""

    info, labels = _Info(), [f"c{i}" for i in range(10)]

    @property
    def cfg(self):
        raise AssertionError("a clip was decoded")

    def predict(self, *a, **k):
        raise AssertionError("the model ran")


def _request(n: int, params=None):
    import base64

    b64 = base64.b64encode(wav_bytes(np.zeros(10))).decode()
    return pd.DataFrame({"audio": [b64] * n}), params


def test_a_too_costly_request_is_refused_before_any_work():
    from fsd.serving.requests import RequestError, score_request

    frame, params = _request(4, {"tta_lengths": [4000] * 16, "tta_crops": 32})
    with pytest.raises(RequestError, match="too costly") as err:
        score_request(_Ensemble(), frame, params)
    assert "8,192,000" in str(err.value)  # 4 clips x 32 crops x 64,000 frames
    # one clip at the maxima is also too much; each bound alone used to let both through
    frame, params = _request(1, {"tta_lengths": [4000] * 16, "tta_crops": 32})
    with pytest.raises(RequestError, match="too costly"):
        score_request(_Ensemble(), frame, params)


def test_the_bundles_own_defaults_are_always_admitted():
    from fsd.serving.requests import cost_limit, parse_params, request_cost

    info = _Info()
    assert request_cost(64, info.tta_lengths, 5) <= cost_limit(info)
    info.max_request_frames = 10  # even a tiny configured limit never refuses the defaults
    assert cost_limit(info) == request_cost(64, info.tta_lengths, 5)
    p = parse_params({"tta_crops": 6}, default_lengths=info.tta_lengths, default_crops=5,
                     default_top_k=3, default_seed=0, n_classes=10)
    assert request_cost(64, p.tta_lengths, p.tta_crops) > cost_limit(info)


def test_error_messages_do_not_echo_long_values():
    from fsd.serving.requests import RequestError, parse_params

    for params in ({"tta_crops": "x" * 10_000}, {"z" * 10_000: 1}, {"top_k": ["y"] * 1000}):
        with pytest.raises(RequestError) as err:
            parse_params(params, default_lengths=[10], default_crops=1, default_top_k=1,
                         default_seed=0, n_classes=3)
        assert len(str(err.value)) < 300


# --- 3. a clip's answer does not depend on the rest of the request --------------------------


class _Net:
    """A deterministic stand-in network whose output depends on each crop's content."""

    def __init__(self, n_mels: int = 8, n_classes: int = 5, seed: int = 0):
        self.w = np.random.default_rng(seed).normal(size=(n_mels, n_classes)) * 3

    def predict_on_batch(self, x):
        z = x[..., 0].mean(axis=1) @ self.w + x[..., 0].std(axis=1) @ self.w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _clips(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(20, 200)), 8)).astype(np.float32) for _ in range(n)]


def test_crops_depend_on_the_clip_only():
    from fsd.model.tta import crop_positions, predict_ensemble

    clips = _clips(12)
    a = clips[0]
    models = [_Net(seed=1), _Net(seed=2)]
    alone = predict_ensemble(models, [a], [None, None], [30, 60], 4, seed=3).probs()[0]
    for batch in ([clips[1], a], clips, clips[::-1], [a, a, clips[5]]):
        probs = predict_ensemble(models, batch, [None, None], [30, 60], 4, seed=3).probs()
        where = next(i for i, c in enumerate(batch) if c is a)
        np.testing.assert_array_equal(probs[where], alone)
    # chunked view building (small memory budget) changes nothing either
    chunked = predict_ensemble(models, clips, [None, None], [30, 60], 4, seed=3,
                               max_view_bytes=60 * 8 * 4 * 4 * 2).probs()
    np.testing.assert_array_equal(chunked, predict_ensemble(models, clips, [None, None],
                                                            [30, 60], 4, seed=3).probs())
    # positions: per clip, per length, stable under other lengths; the seed matters
    p1 = crop_positions([a], [30], 4, seed=3)
    p2 = crop_positions([clips[1], a], [60, 30], 4, seed=3)
    np.testing.assert_array_equal(p1[0, 0], p2[1, 1])
    assert not np.array_equal(p1, crop_positions([a], [30], 4, seed=4))
    assert not np.array_equal(p1[0, 0], crop_positions([clips[1]], [30], 4, seed=3)[0, 0])


# --- 5. --strict stops what comes next ------------------------------------------------------


@pytest.fixture
def sqlite_tracking(tmp_path):
    from conftest_ensemble import tracking_at

    with tracking_at(f"sqlite:///{tmp_path}/mlflow.db"):
        yield


def _small_folder(tmp_path: Path):
    audio = tmp_path / "audio"
    rows = []
    for label, freq in (("low", 300.0), ("high", 2000.0)):
        for i in range(3):
            write_clip(audio / f"{label}{i}.wav", seconds=0.5, freq=freq * (1 + i / 10))
            rows.append(f"{label}{i}.wav,{label}")
    (audio / "empty.wav").write_bytes(b"")
    rows.append("empty.wav,low")
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\n" + "\n".join(rows) + "\n")
    return from_dict({"name": "strict", "output_dir": str(tmp_path / "out"),
                      "data": {"source": "folder", "audio_dir": str(audio), "csv": str(csv)},
                      "folds": {"n_folds": 2},
                      "summary": {"enabled": False},
                      "store": {"cache_dir": str(tmp_path / "cache"), "workers": 1,
                                "log_to_mlflow": False}})


def test_a_strict_failure_fails_the_run_and_later_steps_refuse_it(tmp_path, sqlite_tracking):
    import mlflow

    from fsd import tracking
    from fsd.config import ConfigError
    from fsd.entrypoints import featurize as step

    cfg = _small_folder(tmp_path)
    assert step.run(cfg, Namespace(strict=True)) == 3
    run = tracking.find_runs(cfg, "featurize", finished_only=False)[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_STRICT_FAILED].startswith("1 clips")
    with pytest.raises(ConfigError, match="failed --strict"):
        step.resolve_store(cfg, run.info.run_id)
    with pytest.raises(ConfigError, match="failed --strict"):
        step.resolve_store(cfg)
    # without --strict the same data is accepted, and the step after it finds that run
    assert step.run(cfg, Namespace(strict=False)) == 0
    store, used = step.resolve_store(cfg)
    assert used != run.info.run_id and mlflow.get_run(used).info.status == "FINISHED"


# --- 6. runs whose process is gone are marked KILLED -----------------------------------------


def test_runs_of_dead_processes_are_marked_killed_on_the_next_step(tmp_path, sqlite_tracking):
    from mlflow.tracking import MlflowClient

    from fsd import tracking

    cfg = from_dict({"name": "reap", "output_dir": str(tmp_path / "out")})
    exp_id = tracking.set_experiment(cfg)
    # a process that starts a run and is killed -9 (no chance to end it)
    script = ("import os, mlflow, sys\n"
              "from fsd import tracking\n"
              f"mlflow.set_experiment(experiment_id={exp_id!r})\n"
              "r = mlflow.start_run(tags={**tracking.process_tags(), tracking.TAG_STAGE: "
              f"'featurize', tracking.TAG_CONFIG: {cfg.name!r}}})\n"
              "print(r.info.run_id, flush=True)\n"
              "os.kill(os.getpid(), 9)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ})
    dead_id = out.stdout.split()[0]
    client = MlflowClient()
    assert client.get_run(dead_id).info.status == "RUNNING"
    # a run of this (living) process and one of another host stay as they are
    alive = client.create_run(exp_id, tags=tracking.process_tags())
    other = client.create_run(exp_id, tags={**tracking.process_tags(), tracking.TAG_HOST: "elsewhere"})
    with tracking.stage_run(cfg, "featurize") as run:
        pass
    assert client.get_run(dead_id).info.status == "KILLED"
    assert "was gone" in client.get_run(dead_id).data.tags[tracking.TAG_REAPED]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    tags = client.get_run(run.info.run_id).data.tags
    assert tags[tracking.TAG_PID] == str(os.getpid()) and tags[tracking.TAG_HOST]
    assert tags[tracking.TAG_CONTINUES] == dead_id  # the featurize run it resumes


def test_a_reused_pid_does_not_count_as_alive():
    from fsd import tracking

    me = tracking.process_tags()
    assert process_alive(os.getpid(), me[tracking.TAG_PROC_START])
    if me[tracking.TAG_PROC_START]:
        assert not process_alive(os.getpid(), "1")


def test_a_fold_continuing_an_interrupted_run_names_it(tmp_path, sqlite_tracking, monkeypatch):
    from mlflow.tracking import MlflowClient

    from fsd import tracking
    from fsd.entrypoints import train_fold as step

    cfg = from_dict({"name": "cont", "output_dir": str(tmp_path / "out")})
    exp_id = tracking.set_experiment(cfg)
    client = MlflowClient()
    dead = client.create_run(exp_id, tags={**tracking.process_tags(999_999_999)})
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / step.RUN_ID_FILE).write_text(dead.info.run_id)
    launched = client.create_run(exp_id)  # what `mlflow run` opens for the new attempt
    monkeypatch.setenv("MLFLOW_RUN_ID", launched.info.run_id)
    monkeypatch.setattr(step, "fold_workdir", lambda *a: workdir)

    class Store:
        key = "k" * 16

    def fake_train(cfg, store, fold, workdir, on_epoch=None, progress=True):
        (workdir / "result.json").write_text("{}")

    import fsd.train.fit as fit
    monkeypatch.setattr(fit, "train_fold", fake_train)
    step.train_fold_logged(cfg, Store(), "features-run")
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    tags = client.get_run(launched.info.run_id).data.tags
    assert tags[tracking.TAG_CONTINUES] == dead.info.run_id


# --- 7. tiny, truncated and out-of-range WAVs; the store's dtype ----------------------------


def test_a_one_sample_wav_is_too_short_by_default():
    with pytest.raises(AudioError, match="too short"):
        load_audio(wav_bytes(np.array([0.5])), AudioConfig())
    assert AudioConfig().min_seconds == pytest.approx(0.05)
    t = np.arange(4410) / 44100  # 0.1 s is kept
    assert load_audio(wav_bytes(0.3 * np.sin(2 * np.pi * 440 * t)), AudioConfig()).size > 0


def test_huge_float_samples_are_scaled_not_called_silent():
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t)
    y = load_audio(wav_bytes(tone * 1e30, subtype="FLOAT"), AudioConfig())
    ref = load_audio(wav_bytes(tone, subtype="FLOAT"), AudioConfig())
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_a_truncated_wav_is_kept_with_a_warning_in_the_rejects_report(tmp_path):
    from fsd.data.audio import truncation
    from fsd.features.featurize import featurize

    t = np.arange(44100) / 44100
    full = wav_bytes(0.3 * np.sin(2 * np.pi * 440 * t))
    assert truncation(full) is None and truncation(b"OggS....") is None
    cut = full[: len(full) // 2]
    assert "truncated" in truncation(cut)
    cfg = _small_folder(tmp_path)
    (Path(cfg.data.audio_dir) / "empty.wav").unlink()
    csv = Path(cfg.data.csv)
    csv.write_text(csv.read_text().replace("empty.wav,low\n", "cut.wav,low\n"))
    (Path(cfg.data.audio_dir) / "cut.wav").write_bytes(cut)
    result = featurize(cfg, progress=False)
    assert "cut.wav" in set(result.store.index["fname"])  # kept
    report = pd.read_csv(result.rejects_path)
    row = report[report["fname"] == "cut.wav"].iloc[0]
    assert row["stage"] == "warning" and "truncated" in row["reason"]
    assert not result.rejects and result.stats["n_warnings"] == 1  # a warning is no reject


def test_store_float16_is_part_of_the_store_key(tmp_path):
    from fsd.features.featurize import featurize
    from fsd.features.store import store_key

    cfg = _small_folder(tmp_path)
    (Path(cfg.data.audio_dir) / "empty.wav").unlink()
    csv = Path(cfg.data.csv)
    csv.write_text(csv.read_text().replace("empty.wav,low\n", ""))
    half = featurize(cfg, progress=False)
    cfg.store.float16 = False
    full = featurize(cfg, progress=False)
    assert not full.reused and full.store.key != half.store.key
    assert full.store.meta["logmel_dtype"] == "float32"
    assert store_key(cfg, "f") != store_key(from_dict({}), "f")


# === issue 19, round 2 =======================================================================
# --- 6. dataset loading: malformed rows, the check-then-open race, reasons -------------------


def test_a_malformed_csv_row_is_a_reject_with_its_line_not_an_abort(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav"):
        write_clip(audio / name)
    csv = tmp_path / "meta.csv"
    csv.write_bytes(b"fname,label\n"
                    b"a.wav,Hum\n"                     # line 2: fine
                    b"b.wav,Hum,extra\n"               # line 3: an extra field
                    b"c.wav,\"Hum\n"                   # line 4: an unclosed quote
                    b"d.wav,Hu\xffm\n"                 # line 5: not UTF-8
                    b"e.wav,Buzz\n")                   # line 6: fine
    ds = load_dataset(folder_cfg(audio, csv))
    assert ds.train["fname"].tolist() == ["a.wav", "e.wav"]
    reasons = {r.fname: r.reason for r in ds.rejects}
    assert "meta.csv line 3" in reasons["meta.csv:3"] and "3 fields" in reasons["meta.csv:3"]
    assert "unclosed quote" in reasons["meta.csv:4"]
    assert "not UTF-8" in reasons["meta.csv:5"]
    # the files of the malformed rows are not listed by any row either
    assert {"b.wav", "c.wav", "d.wav"} <= set(reasons)


def test_featurize_runs_through_a_malformed_row(tmp_path):
    audio = tmp_path / "audio"
    for i in range(6):
        write_clip(audio / f"c{i}.wav", seconds=0.4, freq=300 + 200 * (i % 2))
    csv = tmp_path / "meta.csv"
    csv.write_bytes(b"fname,label\n" + b"".join(
        f"c{i}.wav,{'AB'[i % 2]}\n".encode() for i in range(6)) + b"x.wav,\"A,\xff\n")
    out = subprocess.run(
        [sys.executable, "-m", "fsd", "featurize", "--config", "experiments/demo.yaml",
         "data.source=folder", f"data.audio_dir={audio}", f"data.csv={csv}",
         "data.verified_column=", f"output_dir={tmp_path}/out", "folds.n_folds=2",
         "pca.n_components=2", "store.workers=1", "summary.enabled=false"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr


def _listed(tmp_path):
    audio, outside = tmp_path / "audio", tmp_path / "outside"
    write_clip(audio / "ok.wav", freq=440)
    write_clip(audio / "sub" / "inner.wav", freq=440)
    write_clip(outside / "secret.wav", seconds=0.5, freq=1234)
    write_clip(outside / "inner.wav", seconds=0.5, freq=1234)
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\nok.wav,Hum\nsub/inner.wav,Hum\n")
    cfg = folder_cfg(audio, csv)
    return cfg, load_dataset(cfg), audio, outside


def test_a_clip_swapped_for_a_link_after_listing_is_not_read(tmp_path):
    from fsd.features.featurize import extract_one

    cfg, ds, audio, outside = _listed(tmp_path)
    paths = dict(zip(ds.train["fname"], ds.train["path"]))
    # between listing and decoding, the checked file becomes a link to a file outside
    os.unlink(audio / "ok.wav")
    os.symlink(outside / "secret.wav", audio / "ok.wav")
    result = extract_one("ok.wav", paths["ok.wav"], cfg)
    assert not result.ok and "link" in result.reason, result.reason
    # ... and a folder above a checked clip becomes a link to a folder outside
    os.rename(audio / "sub", tmp_path / "sub-moved")
    os.symlink(outside, audio / "sub")
    result = extract_one("sub/inner.wav", paths["sub/inner.wav"], cfg)
    assert not result.ok and "link" in result.reason, result.reason


def test_listed_paths_are_resolved_once(tmp_path):
    audio = tmp_path / "audio"
    write_clip(audio / "real.wav")
    os.symlink(audio / "real.wav", audio / "alias.wav")  # a link inside: allowed, resolved
    csv = tmp_path / "meta.csv"
    csv.write_text("fname,label\nreal.wav,Hum\nalias.wav,Hum\n")
    ds = load_dataset(folder_cfg(audio, csv))
    assert set(ds.train["path"]) == {os.path.realpath(audio / "real.wav")}


def test_rejects_name_the_csv_line_and_the_real_reason(tmp_path):
    from test_datasets import make_fsd

    root = make_fsd(tmp_path / "fsd")
    test_dir = root / "FSDKaggle2018.audio_test"
    write_clip(test_dir / "t_ok.wav")
    secret = write_clip(tmp_path / "secret.wav")
    os.symlink(secret, test_dir / "t_out.wav")
    os.symlink("/dev/zero", test_dir / "t_zero.wav")
    os.symlink(tmp_path / "nothing.wav", test_dir / "t_gone.wav")
    train_dir = root / "FSDKaggle2018.audio_train"
    os.symlink("/dev/zero", train_dir / "a_zero.wav")
    os.symlink(tmp_path / "nothing.wav", train_dir / "a_gone.wav")
    (train_dir / "a_dir.wav").mkdir()
    meta = root / "FSDKaggle2018.meta"
    with open(meta / "train_post_competition.csv", "a") as f:
        f.write("a_zero.wav,Bark,1,1,x\na_gone.wav,Bark,1,1,x\na_dir.wav,Bark,1,1,x\n")
    n_train = len((meta / "train_post_competition.csv").read_text().splitlines())
    (meta / "test_post_competition_scoring_clips.csv").write_text(
        "fname,label,usage\nt_ok.wav,Bark,Public\nt_out.wav,Bark,Public\n/etc/hostname,Bark,"
        "Public\nt_zero.wav,Bark,Public\nt_gone.wav,Bark,Public\n")
    ds = load_dataset(from_dict({"data": {"source": "fsdkaggle2018", "root": str(root)}}))
    assert set(ds.test["fname"]) == {"t_ok.wav"}
    r = {x.fname: x.reason for x in ds.rejects}
    csv = "test_post_competition_scoring_clips.csv"
    assert f"{csv} line 3" in r["t_out.wav"] and "leads outside" in r["t_out.wav"]
    assert f"{csv} line 4" in r["/etc/hostname"] and "inside the audio folder" in r["/etc/hostname"]
    assert f"{csv} line 5" in r["t_zero.wav"] and "leads outside" in r["t_zero.wav"]
    assert f"{csv} line 6" in r["t_gone.wav"] and "link to nothing" in r["t_gone.wav"]
    csv = "train_post_competition.csv"
    assert f"{csv} line {n_train - 2}" in r["a_zero.wav"] and "leads outside" in r["a_zero.wav"]
    assert f"{csv} line {n_train - 1}" in r["a_gone.wav"] and "link to nothing" in r["a_gone.wav"]
    assert f"{csv} line {n_train}" in r["a_dir.wav"] and "not a regular file" in r["a_dir.wav"]
    for reason in r.values():
        assert "but no such file" not in reason and str(tmp_path) not in reason


# --- 8. the batch promise is the tolerance the serving tests check -----------------------------


def test_the_readme_states_the_batch_tolerance_it_is_tested_against():
    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "bit-for-bit the same answer alone or in any batch" not in text
    assert "alone or in any batch; its probabilities agree to float32 rounding, within 1e-6" \
        in text  # tests/test_serve_front.py checks 1e-6 on a served model
