"""Long recordings window by window: spans of known clips in a concatenation, one decode and
no more memory than the file's log-mel, the whole-file summary, the timeline, the served
params and their bound."""

from __future__ import annotations

import base64
import io
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from band_ensemble import SR, TONES, BandEnsemble, concatenation, config, tone

from fsd.features.logmel import logmel
from fsd.features.windows import plan_windows, window_features
from fsd.inference.windows import WindowScorer, summarise
from fsd.serving.requests import RequestError, score_request


def test_windows_plan_every_hop_and_end_with_the_file():
    s, e = plan_windows(10.0, 2.0, 0.5)
    assert s[0] == 0 and e[-1] == 10.0 and np.all(e - s == 2.0) and np.allclose(np.diff(s), 0.5)
    s, e = plan_windows(10.2, 2.0, 1.0)
    assert e[-1] == pytest.approx(10.2) and s[-2] == 8.0  # the last one moved back
    s, e = plan_windows(1.5, 2.0, 1.0)
    assert list(s) == [0.0] and list(e) == [1.5]  # shorter than a window: one window


def test_each_clip_of_a_concatenation_is_found_in_its_own_span(tmp_path):
    spans = concatenation(tmp_path / "long.flac")
    cfg = config()
    scorer = WindowScorer(BandEnsemble(cfg))
    table, summary, probs, wf = scorer(tmp_path / "long.flac", 1.0, 0.5)
    assert list(table.columns[:4]) == ["start", "end", "label_1", "score_1"]
    assert len(table) == 19 and wf.seconds == pytest.approx(10.0, abs=1e-3)
    for label, (a, b) in spans.items():
        inside = table[(table.start >= a) & (table.end <= b)]
        assert len(inside) >= 3 and (inside.label_1 == label).all(), (label, inside)
    gap = table[(table.start >= 3) & (table.end <= 4)]
    assert len(gap) == 1 and gap.label_1.iloc[0] == "" and np.isnan(gap.score_1.iloc[0])
    found = summary.set_index("label")["seconds"]
    for label in spans:
        assert found[label] == pytest.approx(3.0, abs=0.55)
    assert found.sum() == pytest.approx(10.0, abs=1e-6)
    assert set(summary.label) == {"low", "mid", "high", "(silence)"}
    # a window's log-mel is a view of the file's: nothing copied per window
    assert all(np.shares_memory(m, wf.logmel) for m in wf.window_logmels())


def test_the_file_is_decoded_once_and_nothing_but_its_log_mel_grows(tmp_path, monkeypatch):
    read = []
    real_read = sf.SoundFile.read

    def counting(self, frames=-1, *args, **kwargs):
        out = real_read(self, frames, *args, **kwargs)
        read.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    cfg = config()
    peaks, sizes = [], []
    for minutes in (1, 2):
        path = tmp_path / f"long{minutes}.wav"
        sf.write(path, np.concatenate([tone(TONES[k], 20) for k in ("low", "mid", "high")]
                                      * minutes), SR)
        read.clear()
        tracemalloc.start()
        wf = window_features(path, cfg, 2.0, 0.25)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert sum(read) == 60 * minutes * SR  # every frame read exactly once
        peaks.append(peak)
        sizes.append(wf.logmel.nbytes)
    full = logmel(sf.read(path, dtype="float32")[0], SR, cfg.logmel)
    assert wf.logmel.shape == full.shape
    # the whole file's log-mel, but for the dB floor (the file's peak) and soxr's streaming
    # resampling at the very edges
    assert np.abs(wf.logmel[10:-10] - full[10:-10]).mean() < 2e-3
    # a minute more of audio costs a minute more of log-mel, and the waveform is never held
    assert peaks[1] - peaks[0] < 1.15 * (sizes[1] - sizes[0]), (peaks, sizes)
    # beside it, a block, a window and the FFT's scratch: a few MB (the waveform is 21 MB)
    assert peaks[1] < sizes[1] + 6 * 2**20, (peaks, sizes)


def wav_bytes(y: np.ndarray, sr: int = SR, fmt: str = "WAV") -> str:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_the_served_model_takes_window_params_within_its_bound(tmp_path):
    concatenation(tmp_path / "long.flac")
    cfg = config()
    ens = BandEnsemble(cfg)
    clip = base64.b64encode((tmp_path / "long.flac").read_bytes()).decode()
    frame = pd.DataFrame({"audio": [clip]})
    out = score_request(ens, frame, {"window_seconds": 1.0, "hop_seconds": 0.5})
    assert list(out.columns[:5]) == ["clip", "start", "end", "label_1", "score_1"]
    assert len(out) == 19 and (out["clip"] == 0).all()
    assert ens.calls[-1][1:] == ((100,), 1)  # one view of the whole window, by default
    assert out[(out.start >= 4) & (out.end <= 7)].label_1.eq("mid").all()
    # without window params: one answer per clip, as before
    assert len(score_request(ens, frame, {"tta_lengths": [100], "tta_crops": 1})) == 1
    for bad, match in [({"window_seconds": -1}, "window_seconds"),
                       ({"window_seconds": 0.01}, "window_seconds: outside"),
                       ({"window_seconds": 2, "hop_seconds": 3}, "hop_seconds: outside"),
                       ({"hop_seconds": 1}, "needs window_seconds"),
                       ({"window_seconds": "nan"}, "finite"),
                       ({"window_seconds": [1, 2]}, "expected a number")]:
        with pytest.raises(RequestError, match=match):
            score_request(ens, frame, bad)


def test_an_hour_at_one_second_hops_is_refused_before_decoding(tmp_path):
    cfg = config()
    ens = BandEnsemble(cfg)
    hour = np.zeros(3600 * 8000, np.int16)
    hour[::8000] = 1  # not all silent; FLAC packs it small
    buf = io.BytesIO()
    sf.write(buf, hour, 8000, format="FLAC")
    assert len(buf.getvalue()) < 20_000_000
    frame = pd.DataFrame({"audio": [base64.b64encode(buf.getvalue()).decode()]})
    with pytest.raises(RequestError, match="max_recording_seconds") as err:
        score_request(ens, frame, {"window_seconds": 1, "hop_seconds": 1})
    assert "AAAA" not in str(err.value) and len(str(err.value)) < 300
    assert not ens.calls
    # inside the length bound, too many windows for the work bound: refused, not bounded late
    cfg.ensemble.max_recording_seconds = 7200
    ens.info.max_request_frames = 100_000
    with pytest.raises(RequestError, match="request too costly: 3,600 windows"):
        score_request(ens, frame, {"window_seconds": 1, "hop_seconds": 1})
    assert not ens.calls


def test_predict_cli_windows_csv_summary_and_plot(tmp_path, monkeypatch):
    """`fsd predict FILE --window --hop --output --plot` over a stand-in model."""
    from fsd.entrypoints import predict

    concatenation(tmp_path / "long.flac")
    cfg = config()
    monkeypatch.setattr(predict, "_window_scorer", lambda cfg, args: WindowScorer(BandEnsemble(cfg)))
    args = SimpleNamespace(files=[str(tmp_path / "long.flac")], window=1.0, hop=0.5,
                           output=str(tmp_path / "w.csv"), plot=str(tmp_path / "t.png"),
                           top_k=None, model="", exported="")
    assert predict.run(cfg, args) == 0
    table = pd.read_csv(tmp_path / "w.csv", keep_default_na=False)
    assert list(table.columns[:5]) == ["file", "start", "end", "label_1", "score_1"]
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_summary_counts_each_instant_once():
    table = pd.DataFrame({"start": [0, 1, 2, 3], "end": [2, 3, 4, 5],
                          "label_1": ["a", "a", "", "b"], "score_1": [0.9, 0.8, np.nan, 0.3]})
    s = summarise(table, 5.0, min_score=0.5).set_index("label")
    assert s.seconds.sum() == pytest.approx(5.0)
    assert s.loc["a", "seconds"] == pytest.approx(2.5) and s.loc["a", "spans"] == "0.0-2.5"
    assert "(silence)" in s.index and "(unsure)" in s.index


@pytest.mark.parametrize("window,hop,match", [
    (1e9, None, "--window must be between 0.25 and 600 s"),
    (float("inf"), None, "--window must be a finite number"),
    (float("nan"), None, "--window must be a finite number"),
    (0.0, None, "--window must be between"), (-1.0, None, "--window must be between"),
    (1.0, 0.0, "--hop must be between"), (1.0, -2.0, "--hop must be between"),
    (1.0, float("nan"), "--hop must be a finite number"), (1.0, 2.0, "--hop must be between"),
    (None, 1.0, "--hop and --plot need --window")])
def test_local_windows_out_of_bounds_are_one_line(tmp_path, monkeypatch, caplog, window, hop,
                                                  match):
    """Round 3: `--window 1e9` and `inf` were tracebacks, 0 silently predicted whole files."""
    from fsd.entrypoints import predict

    concatenation(tmp_path / "long.flac")
    cfg = config()
    ens = BandEnsemble(cfg)
    monkeypatch.setattr(predict, "_window_scorer", lambda cfg, args: WindowScorer(ens))
    args = SimpleNamespace(files=[str(tmp_path / "long.flac")], window=window, hop=hop,
                           output="", plot="", top_k=None, model="", exported="")
    assert predict.run(cfg, args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and match in errors[0] and "\n" not in errors[0], errors
    assert not ens.calls


def test_local_windows_follow_the_served_work_bound(tmp_path, capsys):
    concatenation(tmp_path / "long.flac")
    cfg = config()
    ens = BandEnsemble(cfg)
    ens.info.max_request_frames = 1_000
    from fsd.inference.windows import WindowLimit

    with pytest.raises(WindowLimit, match=r"windows of 1 s every 0.05 s = [\d,]+ view frames"):
        WindowScorer(ens)(str(tmp_path / "long.flac"), 1.0, 0.05)
    assert not ens.calls  # refused from the header, before decoding
    cfg.ensemble.max_recording_seconds = 5
    with pytest.raises(WindowLimit, match="between 0.25 and 5 s"):
        WindowScorer(ens)(str(tmp_path / "long.flac"), 6.0, 1.0)


def test_a_window_longer_than_the_recording_is_the_whole_file(tmp_path, monkeypatch):
    """Round 3: `--window 5000` on a 5 s clip padded one view to 5000 s (5.4 GB) and changed
    the answer. Now the one window is the file, seen as the model sees a whole clip."""
    import tracemalloc

    sf.write(tmp_path / "clip.wav", tone(TONES["mid"], 2.0), SR)
    cfg = config()
    ens = BandEnsemble(cfg)
    tracemalloc.start()
    table, _, probs, wf = WindowScorer(ens)(str(tmp_path / "clip.wav"), 500.0, 500.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(table) == 1 and table.end.iloc[0] == pytest.approx(2.0)
    assert ens.calls[-1][1:] == ((100,), 1)  # the model's own tta_lengths and crops
    assert peak < 200 * 2**20
    exact, _, probs_exact, _ = WindowScorer(ens)(str(tmp_path / "clip.wav"), 2.0, 2.0)
    np.testing.assert_array_equal(probs, probs_exact)


def test_windows_are_scored_in_batches_that_a_cancel_stops(tmp_path):
    from threading import Event

    from fsd.inference.inflight import Cancelled
    from fsd.inference.windows import WINDOW_BATCH, score_windows

    concatenation(tmp_path / "long.flac")
    cfg = config()
    ens = BandEnsemble(cfg)
    wf = window_features(str(tmp_path / "long.flac"), cfg, 0.5, 0.1)
    assert len(wf) > 2 * WINDOW_BATCH
    whole = score_windows(ens, wf, [50], 1, 0)
    sizes = [c[0] for c in ens.calls]
    assert max(sizes) == WINDOW_BATCH and sum(sizes) == int((~wf.silent).sum()) > WINDOW_BATCH
    ens.calls.clear()

    class AfterFirst:  # set once the first batch is done
        def is_set(self):
            return len(ens.calls) >= 1

    with pytest.raises(Cancelled):
        score_windows(ens, wf, [50], 1, 0, cancel=AfterFirst())
    assert len(ens.calls) == 1
    ev = Event()
    np.testing.assert_array_equal(score_windows(ens, wf, [50], 1, 0, cancel=ev), whole)
