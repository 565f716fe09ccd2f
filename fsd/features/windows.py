"""A long recording's features window by window, decoded once and streamed.

One pass over the file, in blocks: each block is mixed to mono and resampled to the load rate
(``audio.sample_rate``) and on to the log-mel rate with soxr's streaming resamplers; the
log-mel of the whole file is built frame by frame (the same centred, reflect-padded Hann
frames as :func:`fsd.features.logmel.logmel`) into one preallocated array; each window's
summary features are computed from a buffer that holds the load-rate samples of the windows
not finished yet (at most one window and one block). So nothing but the file's log-mel grows
with the file, and the file is decoded exactly once.

A window is scored as a clip: its slice of the file's log-mel (a view, no copy) and its own
summary vector, both of the window trimmed of its leading and trailing silence as clips are
(``audio.trim``). The whole file is not trimmed: times are the file's own. The dB floor
(``logmel.top_db``) is taken below the file's loudest frame rather than each window's, which
changes only bins 80 dB below the peak. A window with nothing but silence is marked silent
and not scored. Windows start every ``hop`` seconds; the last one is moved back to end with
the file, so every window is ``window`` seconds long unless the file is shorter.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fsd.config import Config
from fsd.data.audio import MAX_FLOAT_PEAK, AudioError, _short, check_size, open_checked
from fsd.features.logmel import hann_window, mel_basis

BLOCK_SECONDS = 4.0  # decoded per read
FFT_FRAMES = 64  # log-mel frames per FFT call (a few hundred KB of transients)


@dataclass
class WindowFeatures:
    """Per window: ``starts``/``ends`` (seconds in the file), ``frames`` ((a, b) slice of
    ``logmel``), ``silent``; ``summaries`` (n_windows, dim) or None (summary disabled);
    ``logmel`` the whole file's (frames, n_mels) float32; ``seconds`` the decoded duration."""

    starts: np.ndarray
    ends: np.ndarray
    frames: np.ndarray  # (n_windows, 2) int64
    silent: np.ndarray  # (n_windows,) bool
    summaries: np.ndarray | None
    logmel: np.ndarray
    seconds: float

    def __len__(self) -> int:
        return len(self.starts)

    def window_logmels(self) -> list[np.ndarray]:
        """Each scored (not silent) window's log-mel: views into the file's log-mel."""
        return [self.logmel[a:b] for (a, b), s in zip(self.frames, self.silent) if not s]


def plan_windows(seconds: float, window: float, hop: float) -> tuple[np.ndarray, np.ndarray]:
    """Window starts and ends (seconds) over a file of ``seconds``: every ``hop``, the last
    moved back to end with the file; one window of the whole file when it is shorter."""
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    if seconds <= window:
        return np.zeros(1), np.array([float(seconds)])
    n = 1 + math.ceil((seconds - window) / hop - 1e-9)
    starts = np.minimum(np.arange(n) * hop, seconds - window)
    return starts, starts + window


def frames_per_second(cfg) -> float:
    """Log-mel frames per second of audio (``cfg``: a Config)."""
    return cfg.logmel.sample_rate / cfg.logmel.hop_length


def count_windows(seconds: float, window: float, hop: float) -> int:
    return len(plan_windows(seconds, window, hop)[0])


def _open(source: str | os.PathLike | bytes):
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("empty file (0 bytes)")
        return io.BytesIO(bytes(source))
    return open_checked(os.path.realpath(source))


def window_features(source: str | os.PathLike | bytes, cfg: Config, window: float, hop: float,
                    max_seconds: float | None = None,
                    between_blocks: Callable[[], None] | None = None) -> WindowFeatures:
    """Decode ``source`` once, in blocks, into its windows' features (module docstring).

    ``max_seconds`` refuses a longer file from its header (None: any length);
    ``between_blocks`` is called before each block is decoded (a served request's cancel check:
    whatever it raises stops the decode). Raises AudioError for a file that is not usable
    audio."""
    import soundfile as sf

    handle = _open(source)
    try:
        with handle, sf.SoundFile(handle) as f:
            rate, channels, total = int(f.samplerate), int(f.channels), int(f.frames)
            if rate <= 0 or channels <= 0 or total < 0:
                raise AudioError(f"invalid header: {rate} Hz, {channels} channels")
            check_size(total, channels, rate, max_seconds)
            stream = _Stream(cfg, rate, total / rate, window, hop)
            block = max(1, int(BLOCK_SECONDS * rate))
            left = total
            while left > 0:  # never past the header's frames: it bounds the work
                if between_blocks is not None:
                    between_blocks()
                data = f.read(min(block, left), dtype="float32", always_2d=True)
                if len(data) == 0:
                    break  # a truncated file: the present part is used
                left -= len(data)
                stream.feed(data)
            return stream.finish()
    except AudioError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError, EOFError, TypeError, ValueError) as exc:
        raise AudioError(f"not decodable audio ({_short(exc)})") from None


class _Stream:
    """The streaming state: resamplers, the log-mel being built, the pending windows."""

    def __init__(self, cfg: Config, rate: int, seconds: float, window: float, hop: float):
        import soxr

        self.cfg, self.rate = cfg, rate
        a, lm = cfg.audio, cfg.logmel
        quality = a.resample_type.removeprefix("soxr_").upper() \
            if a.resample_type.startswith("soxr_") else "HQ"
        self.sr = a.sample_rate
        self.to_load = soxr.ResampleStream(rate, self.sr, 1, dtype="float32", quality=quality) \
            if rate != self.sr else None
        self.to_mel = soxr.ResampleStream(self.sr, lm.sample_rate, 1, dtype="float32",
                                          quality=quality) if self.sr != lm.sample_rate else None
        self.starts, self.ends = plan_windows(seconds, window, hop)
        self.window, self.hop = window, hop
        # load-rate samples from self.base on, for the windows not summarised yet
        self.buf = np.zeros(0, np.float32)
        self.base = 0
        self.next_window = 0
        self.summaries: list[np.ndarray] = []
        self.bounds: list[tuple[int, int]] = []  # trimmed window, load-rate samples
        self.n_load = 0
        # log-mel: the padded 22.05 kHz signal not framed yet, the frames so far
        self.n_fft, self.hop_length = lm.n_fft, lm.hop_length
        self.pad = lm.n_fft // 2
        self.mel_head: np.ndarray | None = None  # the first samples, for the left reflect pad
        self.mel_buf = np.zeros(0, np.float32)
        expected = 1 + int(seconds * lm.sample_rate * 1.001 + lm.n_fft) // lm.hop_length
        self.power = np.empty((expected, lm.n_mels), np.float32)
        self.n_frames = 0
        self.basis = mel_basis(lm.sample_rate, lm.n_fft, lm.n_mels, float(lm.fmin),
                               float(lm.fmax))
        self.win = hann_window(lm.n_fft)

    # --- input ------------------------------------------------------------------------------

    def feed(self, data: np.ndarray, last: bool = False) -> None:
        if len(data) and not np.isfinite(data).all():
            raise AudioError("contains NaN or infinite samples")
        y = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        np.clip(y, -MAX_FLOAT_PEAK, MAX_FLOAT_PEAK, out=y)
        y = self.to_load.resample_chunk(y, last=last) if self.to_load is not None else y
        self._load_rate(np.asarray(y, np.float32), last)

    def _load_rate(self, y: np.ndarray, last: bool) -> None:
        self.n_load += len(y)
        self.buf = np.concatenate([self.buf, y]) if len(self.buf) else y.copy()
        m = self.to_mel.resample_chunk(y, last=last) if self.to_mel is not None else y
        self._mel_samples(np.asarray(m, np.float32), last)
        self._summarise(last)

    # --- log-mel ----------------------------------------------------------------------------

    def _mel_samples(self, m: np.ndarray, last: bool) -> None:
        if self.mel_head is None:
            self.mel_buf = np.concatenate([self.mel_buf, m])
            if len(self.mel_buf) <= self.pad and not last:
                return  # the left pad needs pad + 1 samples
            head = self.mel_buf
            if len(head) <= self.pad:
                raise AudioError("too short to compute a log-mel frame")
            self.mel_head = head[:self.pad + 1].copy()
            self.mel_buf = np.concatenate([head[1:self.pad + 1][::-1], head])
        else:
            self.mel_buf = np.concatenate([self.mel_buf, m])
        if last:
            if len(self.mel_buf) < self.pad + 2:
                raise AudioError("too short to compute a log-mel frame")
            self.mel_buf = np.concatenate([self.mel_buf, self.mel_buf[-self.pad - 1:-1][::-1]])
        self._frames()

    def _frames(self) -> None:
        import scipy.fft

        n = 0 if len(self.mel_buf) < self.n_fft else 1 + (len(self.mel_buf) - self.n_fft) \
            // self.hop_length
        if n == 0:
            return
        frames = np.lib.stride_tricks.sliding_window_view(self.mel_buf, self.n_fft)[
            ::self.hop_length][:n]
        for s in range(0, n, FFT_FRAMES):
            spec = np.abs(scipy.fft.rfft(frames[s:s + FFT_FRAMES] * self.win, axis=-1,
                                         workers=1))
            power = spec ** self.cfg.logmel.power if self.cfg.logmel.power != 1.0 else spec
            rows = (power.astype(np.float32) @ self.basis.T)
            self._append(rows)
        self.mel_buf = self.mel_buf[n * self.hop_length:].copy()

    def _append(self, rows: np.ndarray) -> None:
        end = self.n_frames + len(rows)
        if end > len(self.power):  # the header under-counted: grow (rare)
            grown = np.empty((max(end, int(len(self.power) * 1.25)), self.power.shape[1]),
                             np.float32)
            grown[:self.n_frames] = self.power[:self.n_frames]
            self.power = grown
        self.power[self.n_frames:end] = rows
        self.n_frames = end

    # --- windows ----------------------------------------------------------------------------

    def _summarise(self, last: bool) -> None:
        while self.next_window < len(self.starts):
            i = self.next_window
            a = int(round(self.starts[i] * self.sr))
            b = int(round(self.ends[i] * self.sr))
            if b > self.n_load and not last:
                break
            b = min(b, self.n_load)
            self._one_window(self.buf[max(a - self.base, 0):max(b - self.base, 0)], a)
            self.next_window += 1
            nxt = int(round(self.starts[i + 1] * self.sr)) if i + 1 < len(self.starts) \
                else self.n_load
            drop = max(0, min(nxt, self.n_load) - self.base)
            if drop:
                self.buf = self.buf[drop:].copy()
                self.base += drop

    def _one_window(self, y: np.ndarray, offset: int) -> None:
        a = self.cfg.audio
        lo, hi = 0, len(y)
        if len(y) and np.any(y) and a.trim:
            import librosa

            _, (lo, hi) = librosa.effects.trim(y, top_db=a.trim_top_db,
                                               frame_length=a.trim_frame_length,
                                               hop_length=a.trim_hop_length)
        silent = hi <= lo or not np.any(y[lo:hi]) or (hi - lo) / self.sr < a.min_seconds
        self.bounds.append((-1, -1) if silent else (offset + lo, offset + hi))
        if self.cfg.summary.enabled and not silent:
            from fsd.features.summary import summary_features

            self.summaries.append(np.asarray(summary_features(
                np.ascontiguousarray(y[lo:hi]), self.sr, self.cfg.summary), np.float32))

    # --- the end ----------------------------------------------------------------------------

    def finish(self) -> WindowFeatures:
        if self.n_load == 0 and self.to_load is None:
            raise AudioError("no audio samples")
        empty = np.zeros((0, 1), np.float32)
        if self.to_load is not None:
            self._load_rate(np.asarray(self.to_load.resample_chunk(empty[:, 0], last=True),
                                       np.float32), last=True)
        else:
            self._load_rate(empty[:, 0], last=True)
        if self.n_load == 0:
            raise AudioError("no audio samples")
        lm = self.cfg.logmel
        power = self.power[:self.n_frames]
        db = power  # in place: the file's log-mel is the only array of its size
        np.maximum(db, np.float32(lm.amin), out=db)
        np.log10(db, out=db)
        db *= np.float32(10.0)
        if lm.top_db is not None and db.size:
            np.maximum(db, db.max() - np.float32(lm.top_db), out=db)
        db -= np.float32(lm.norm_min)
        db *= np.float32(1.0 / (lm.norm_max - lm.norm_min))
        seconds = self.n_load / self.sr
        keep = self.starts < seconds
        keep[0] = True
        starts, ends = self.starts[keep], np.minimum(self.ends[keep], seconds)
        bounds = np.asarray(self.bounds[:len(starts)], np.int64).reshape(-1, 2)
        silent = bounds[:, 0] < 0
        scale = lm.sample_rate / self.sr / lm.hop_length  # load-rate sample -> frame
        frames = np.zeros((len(starts), 2), np.int64)
        frames[:, 0] = np.clip(np.round(bounds[:, 0] * scale), 0, self.n_frames - 1)
        frames[:, 1] = np.clip(np.round(bounds[:, 1] * scale), frames[:, 0] + 1, self.n_frames)
        frames[silent] = 0
        summaries = np.stack(self.summaries) if self.summaries else None
        if summaries is not None and len(summaries) != int((~silent).sum()):
            summaries = summaries[:int((~silent).sum())]
        if self.cfg.summary.enabled and summaries is None:
            summaries = np.zeros((0, 0), np.float32)
        return WindowFeatures(starts=starts, ends=ends, frames=frames, silent=silent,
                              summaries=summaries, logmel=np.ascontiguousarray(db),
                              seconds=seconds)
