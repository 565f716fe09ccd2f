"""Decoding a clip into the recipe's waveform: float32 mono at the load rate, silence trimmed.

Every way a clip can be unusable raises :class:`AudioError` with a reason a person can act on;
callers record it as a rejection (featurize) or a 4xx answer (serving) instead of crashing.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from pathlib import Path

import numpy as np
import soundfile as sf

from fsd.config import AudioConfig


class AudioError(ValueError):
    """A clip that cannot be turned into a usable waveform; ``str(err)`` is the reason."""


# Float audio may exceed full scale a little (headroom); a peak beyond this is not a level any
# recording has, and its square overflows the float32 power spectrum (a +-1e30 WAV used to come
# out "silent"). Such a clip is scaled to peak 1.0 instead.
MAX_FLOAT_PEAK = 16.0


AudioSource = str | Path | bytes


# What one clip may decode to, all channels together: max_seconds x this many samples per
# second (192 kHz stereo, or 48 kHz in 8 channels). A small compressed file (a FLAC of 59 s,
# 8 channels at 655 kHz is 576 KB) cannot make the decoder allocate gigabytes: its header
# declares frames x channels, and a clip over the bound is refused before any sample is read.
MAX_SAMPLES_PER_SECOND = 384_000


def open_checked(path: str | os.PathLike) -> io.BufferedReader:
    """Open a listed clip without following links, and check that what was opened is what was
    checked: a regular file whose real path is ``path`` itself.

    Datasets resolve each clip once when the folder is listed (``fsd.data.dataset``) and keep
    that resolved path (a caller with its own path passes ``os.path.realpath`` of it); a file
    swapped for a link afterwards (the last component: ``O_NOFOLLOW``
    refuses it; a folder above it: the opened file's real path differs) is refused here
    instead of read."""
    path = os.path.abspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise AudioError(f"file not found: {Path(path).name}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError("the file became a link after the folder was listed: not read") \
                from None
        raise AudioError(f"cannot open the file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AudioError("not a regular file")
        real = _fd_path(fd)
        if real is not None and real != path:
            raise AudioError("the file's folder became a link after it was listed: not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _fd_path(fd: int) -> str | None:
    """Where an open file really is (Linux' /proc/self/fd); None where that cannot be read."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def decode(source: AudioSource, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG (anything libsndfile reads) into float32 of shape (frames, channels).

    With ``max_seconds``, a longer clip, or one whose frames x channels exceed ``max_seconds x
    MAX_SAMPLES_PER_SECOND``, is refused from its header before any sample is read, so a small
    upload cannot exhaust memory. A path is opened with :func:`open_checked`. A truncated file
    (its header promises more data than it holds) decodes to the frames that are present:
    libsndfile counts those, not the header's claim.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("empty file (0 bytes)")
        handle: io.IOBase = io.BytesIO(bytes(source))
    else:
        handle = open_checked(source)
        if os.fstat(handle.fileno()).st_size == 0:
            handle.close()
            raise AudioError("empty file (0 bytes)")
    try:
        with handle, sf.SoundFile(handle) as f:
            rate = int(f.samplerate)
            if rate <= 0 or f.channels <= 0:
                raise AudioError(f"invalid header: {rate} Hz, {f.channels} channels")
            check_size(f.frames, f.channels, rate, max_seconds)
            data = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    # SoundFileError covers libsndfile's refusals; OSError an unreadable file; the rest are
    # what a corrupt header can make the reader raise. None of them may escape as a crash.
    except (sf.SoundFileError, RuntimeError, OSError, EOFError, TypeError, ValueError) as exc:
        raise AudioError(f"not decodable audio ({_short(exc)})") from None
    return data, rate


def check_size(frames: int, channels: int, rate: int, max_seconds: float | None) -> None:
    """Refuse, from a header's numbers, a clip longer than ``max_seconds`` or one that would
    decode to more than ``max_seconds x MAX_SAMPLES_PER_SECOND`` samples (all channels)."""
    if max_seconds is None:
        return
    if frames / rate > max_seconds:
        raise AudioError(f"too long: {frames / rate:.1f} s > audio.max_seconds {max_seconds:g} s")
    limit = int(max_seconds * MAX_SAMPLES_PER_SECOND)
    if frames * channels > limit:
        raise AudioError(
            f"too large once decoded: {frames} frames x {channels} channels = "
            f"{frames * channels:,} samples > {limit:,} (audio.max_seconds x "
            f"{MAX_SAMPLES_PER_SECOND:,} per second)")


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels (the recipe's mono mix-down)."""
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def resample(y: np.ndarray, rate_in: int, rate_out: int, res_type: str = "soxr_hq") -> np.ndarray:
    """The one resampler (loading and log-mel): soxr directly for ``soxr_*`` types, which skips
    librosa's per-call overhead; librosa for the others (``kaiser_best`` as in 2018)."""
    if rate_in == rate_out:
        return np.asarray(y, dtype=np.float32)
    if res_type.startswith("soxr_"):
        import soxr

        quality = res_type.removeprefix("soxr_").upper()
        out = soxr.resample(np.asarray(y, dtype=np.float32), rate_in, rate_out, quality=quality)
        return out.astype(np.float32, copy=False)
    import librosa

    return librosa.resample(y, orig_sr=rate_in, target_sr=rate_out, res_type=res_type).astype(
        np.float32, copy=False
    )


def trim_silence(y: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Leading and trailing silence off, as ``librosa.effects.trim`` with the recipe's defaults."""
    import librosa

    trimmed, _ = librosa.effects.trim(
        y, top_db=cfg.trim_top_db, frame_length=cfg.trim_frame_length, hop_length=cfg.trim_hop_length
    )
    return trimmed


def load_audio(source: AudioSource, cfg: AudioConfig) -> np.ndarray:
    """Decode, check, mix to mono, resample to ``cfg.sample_rate`` and trim.

    Raises AudioError for: empty or undecodable input, no samples, NaN/inf samples, a clip
    that is silent throughout, and a clip outside ``[min_seconds, max_seconds]``.
    """
    data, rate = decode(source, max_seconds=cfg.max_seconds)
    if data.shape[0] == 0:
        raise AudioError("no audio samples")
    if not np.isfinite(data).all():
        raise AudioError("contains NaN or infinite samples")
    peak = float(np.max(np.abs(data)))
    if peak == 0.0:
        raise AudioError("silent: every sample is zero")
    if peak > MAX_FLOAT_PEAK:
        data = (data.astype(np.float64) / peak).astype(np.float32)
    y = to_mono(data)
    if not np.any(y):
        raise AudioError("silent: every sample is zero")
    y = resample(y, rate, cfg.sample_rate, cfg.resample_type)
    if cfg.trim:
        y = trim_silence(y, cfg)
    if y.size == 0 or not np.any(y):
        raise AudioError("silent: nothing left after trimming silence")
    if y.size / cfg.sample_rate < cfg.min_seconds:
        raise AudioError(
            f"too short: {y.size / cfg.sample_rate:.3f} s < audio.min_seconds {cfg.min_seconds:g} s"
        )
    return np.ascontiguousarray(y, dtype=np.float32)


def truncation(source: AudioSource) -> str | None:
    """A warning when a WAV's header promises more audio than the file holds (a cut-off
    download or copy); None for a complete WAV and for other formats. libsndfile decodes the
    frames that are present, so such a clip is kept, and featurize reports the warning."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            head = bytes(source[:1 << 16])
            size = len(source)
        else:
            with open_checked(source) as f:
                head = f.read(1 << 16)
                size = os.fstat(f.fileno()).st_size
    except (OSError, AudioError):
        return None
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "little" if head[:4] == b"RIFF" else "big"
    pos = 12
    while pos + 8 <= len(head):
        cid, n = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], order)
        if cid == b"data":
            present = size - (pos + 8)
            if n != 0xFFFFFFFF and present < n:
                return (f"truncated: the header promises {n} bytes of audio, the file holds "
                        f"{max(present, 0)} ({100 * max(present, 0) / max(n, 1):.0f}%); the "
                        "present part is used")
            return None
        pos += 8 + n + (n & 1)
    return None


def _short(exc: Exception) -> str:
    """libsndfile's reason without what it quotes: "Error opening <_io.BytesIO object at
    0x7f...>: Format not recognised." -> "Format not recognised." (no object address, no
    path: the message reaches clients and reports)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Error opening .*?: ", "", text)
    text = re.sub(r"<[^<>]*? at 0x[0-9a-fA-F]+>", "the clip", text)
    text = re.sub(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}", "the file", text)
    return text[:160]
