"""Transcribe a VOD (any audio or video file) into timed segments with word timings, once.

``transcribe_vod(path, options)`` decodes the file in pieces of about ten
minutes (cut at the quietest moment near each boundary, so memory stays flat
on a four-hour VOD and no word is cut in two), runs faster-whisper on each
(Silero VAD on, word timestamps on, no conditioning on the previous text so a
hallucination cannot loop across the stream) and shows a progress bar on
stderr. The result is cached under ``data/cache/transcripts/`` keyed by the
file's content (sha256, streamed), the model and the decoding options, as JSON
lines (a header, then one segment a line): a re-run, or the same VOD under
another name, is read back instead of transcribed.

``read_transcript_file(path)`` reads a transcript made elsewhere (``--transcript``):
a JSON array of segments ``{start, end, text, words?}``, an object with a
``segments`` array (Whisper's JSON output), JSON lines of segments, or one of
this module's cache files. Word entries are ``{start, end, word|text}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatling.audio import SAMPLE_RATE, iter_audio_chunks, probe_audio
from chatling.core.errors import AudioError, ConfigError, InputFileError
from chatling.core.paths import PROJECT_ROOT, resolve_path
from chatling.core.settings import AudioSettings
from chatling.training.data.align import Segment, Word

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = PROJECT_ROOT / "data" / "cache" / "transcripts"
CACHE_VERSION = 1
_HEADER_KIND = "chatling-transcript"


@dataclass(frozen=True, slots=True)
class VodOptions:
    """Which model and decoding options transcribe a VOD (all but threads key the cache)."""

    model: str = "data/models/whisper-base-ct2"
    language: str | None = "en"
    beam_size: int = 1
    compute_type: str = "int8"
    cpu_threads: int = 0
    batch_size: int = 0
    """0: one segment at a time; N: faster-whisper's batched pipeline, N at once."""
    piece_s: float = 600.0
    """Audio decoded and transcribed at a time (memory: 64 KB a second)."""

    def __post_init__(self) -> None:
        if self.piece_s < 20 or self.batch_size < 0 or self.beam_size < 1:
            raise ConfigError("VodOptions: need piece_s >= 20, batch_size >= 0, beam_size >= 1")

    @classmethod
    def from_settings(cls, settings: AudioSettings, **overrides: Any) -> VodOptions:
        fields = {
            "model": settings.whisper_model,
            "language": settings.language,
            "beam_size": settings.beam_size,
            "compute_type": settings.compute_type,
            "cpu_threads": settings.cpu_threads,
        }
        return cls(**{**fields, **overrides})

    def cache_identity(self) -> dict[str, Any]:
        """What changes the transcript: the model (path and size of its weights) and options."""
        identity = {k: v for k, v in asdict(self).items() if k != "cpu_threads"}
        path = resolve_path(self.model)
        weights = path / "model.bin"
        if weights.is_file():
            identity["model"] = str(path.resolve())
            identity["model_bytes"] = weights.stat().st_size
        identity["vad_filter"] = True
        identity["word_timestamps"] = True
        return identity


@dataclass(frozen=True, slots=True)
class Transcript:
    """The segments of one VOD and where they came from."""

    segments: list[Segment]
    sha256: str
    """Content hash of the VOD file."""
    cached: bool
    """True when read from the cache: no transcription ran."""
    cache_file: Path | None
    duration_s: float


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of the file's bytes, read in 1 MiB blocks (constant memory)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    except OSError as exc:
        raise AudioError(path, None, f"cannot read the file ({exc.strerror})") from None
    return digest.hexdigest()


def cache_file_for(cache_dir: Path, sha256: str, options: VodOptions) -> Path:
    key = json.dumps({"sha256": sha256, **options.cache_identity()}, sort_keys=True)
    return cache_dir / f"{sha256[:16]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"


def _progress(total: float, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=math.ceil(total) or None,
        desc=desc,
        unit="s",
        unit_scale=False,
        file=sys.stderr,
        disable=not enabled,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s [{elapsed}<{remaining}]",
    )


def transcribe_vod(
    path: str | Path,
    options: VodOptions,
    *,
    model: Any = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
    load_model: Callable[[VodOptions], Any] | None = None,
) -> Transcript:
    """The VOD's segments: from the cache when this file was transcribed with these options.

    ``model`` is a loaded ``faster_whisper.WhisperModel`` to use; without it the
    model is loaded (only when the cache misses). A missing or undecodable file
    raises ``AudioError`` before anything slow starts.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, None, "no such audio or video file; check the path")
    duration = probe_audio(path)  # fails within a second on a corrupt file
    sha = file_sha256(path)
    cache_file = cache_file_for(cache_dir, sha, options)
    cached = read_cache(cache_file)
    if cached is not None:
        log.info("transcript of %s from cache %s (%d segments)", path, cache_file, len(cached))
        return Transcript(cached, sha, True, cache_file, duration)
    if model is None:
        model = (load_model or load_vod_model)(options)
    log.info("transcribing %s (%.0f s of audio) with %s", path, duration, options.model)
    segments: list[Segment] = []
    with _progress(duration, f"transcribing {path.name}", progress) as bar:
        for seg in _transcribe_pieces(model, path, options):
            segments.append(seg)
            # Whole seconds, never past the total (tqdm warns when a bar overflows).
            bar.update(max(0, min(math.floor(seg.end), bar.total or 2**62) - bar.n))
        bar.update(max(0, (bar.total or bar.n) - bar.n))
    write_cache(cache_file, segments, sha, options, duration)
    log.info("transcribed %s: %d segments, cached in %s", path, len(segments), cache_file)
    return Transcript(segments, sha, False, cache_file, duration)


def load_vod_model(options: VodOptions) -> Any:
    """The faster-whisper model the options name (``ModelError`` when it cannot load)."""
    from chatling.transcribe import load_whisper

    settings = AudioSettings(
        whisper_model=options.model,
        compute_type=options.compute_type,
        cpu_threads=options.cpu_threads,
    )
    return load_whisper(settings)


def _pieces(path: Path, piece_s: float) -> Iterator[tuple[float, np.ndarray]]:
    """(offset, samples) pieces of about ``piece_s``, each cut at the quietest 0.1 s
    of its last 10 s so that a boundary falls in a pause, not inside a word."""
    target = int(piece_s * SAMPLE_RATE)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0.0
    for chunk in iter_audio_chunks(path, chunk_s=30.0):
        buffer = np.concatenate([buffer, chunk])
        if buffer.size < target:
            continue
        frame = SAMPLE_RATE // 10
        tail = buffer[target - 10 * SAMPLE_RATE : target]
        energy = (tail[: tail.size // frame * frame].reshape(-1, frame) ** 2).mean(axis=1)
        cut = target - 10 * SAMPLE_RATE + int(np.argmin(energy)) * frame + frame // 2
        yield offset, buffer[:cut]
        offset += cut / SAMPLE_RATE
        buffer = buffer[cut:]
    if buffer.size:
        yield offset, buffer


def _transcribe_pieces(model: Any, path: Path, options: VodOptions) -> Iterator[Segment]:
    runner = model
    kwargs: dict[str, Any] = {}
    if options.batch_size > 0:
        from faster_whisper import BatchedInferencePipeline

        runner = BatchedInferencePipeline(model)
        kwargs["batch_size"] = options.batch_size
    for offset, audio in _pieces(path, options.piece_s):
        segments, _info = runner.transcribe(
            audio,
            language=options.language,
            beam_size=options.beam_size,
            vad_filter=True,
            word_timestamps=True,
            condition_on_previous_text=False,
            **kwargs,
        )
        for seg in segments:
            text = seg.text.strip()
            if not text:
                continue
            words = tuple(
                Word(round(offset + w.start, 3), round(offset + w.end, 3), w.word.strip())
                for w in seg.words or ()
                if w.word.strip()
            )
            yield Segment(round(offset + seg.start, 3), round(offset + seg.end, 3), text, words)


# --------------------------------------------------------------------------- cache


def read_cache(path: Path) -> list[Segment] | None:
    """The cached segments, or None when absent or unreadable (then it is re-made)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: unreadable transcript cache (%s); transcribing again", path, exc)
        return None
    try:
        header = json.loads(lines[0])
        if header.get("kind") != _HEADER_KIND or header.get("version") != CACHE_VERSION:
            raise ValueError("not a transcript cache of this version")
        segments = [Segment.from_json(json.loads(line)) for line in lines[1:] if line.strip()]
        if len(segments) != header.get("segments"):
            raise ValueError("truncated")
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: broken transcript cache (%s); transcribing again", path, exc)
        return None
    return segments


def write_cache(
    path: Path, segments: list[Segment], sha256: str, options: VodOptions, duration: float
) -> None:
    """Write atomically (temp file + rename): a crash never leaves half a cache file."""
    header = {
        "kind": _HEADER_KIND,
        "version": CACHE_VERSION,
        "sha256": sha256,
        "options": options.cache_identity(),
        "duration_s": duration,
        "segments": len(segments),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n")
            for seg in segments:
                f.write(json.dumps(seg.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- --transcript


def _number(path: Path, where: str, name: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InputFileError(path, where, f"{name} must be a number of seconds, not {value!r:.40}")


def _segment(path: Path, where: str, item: Any) -> Segment:
    if not isinstance(item, dict):
        raise InputFileError(path, where, "expected a segment object {start, end, text}")
    for key in ("start", "end"):
        if key not in item:
            raise InputFileError(path, where, f"segment has no {key!r}: every segment needs times")
    start = _number(path, where, "start", item["start"])
    end = _number(path, where, "end", item["end"])
    if end < start:
        raise InputFileError(path, where, f"segment ends ({end}) before it starts ({start})")
    text = item.get("text", item.get("text_normalized"))
    if not isinstance(text, str):
        raise InputFileError(path, where, "segment has no 'text' string")
    words = []
    for n, w in enumerate(item.get("words") or ()):
        here = f"{where}, word {n}"
        if not isinstance(w, dict):
            raise InputFileError(path, here, "expected a word object {start, end, word}")
        token = w.get("word", w.get("text"))
        if not isinstance(token, str):
            raise InputFileError(path, here, "word has no 'word' string")
        w_start = _number(path, here, "start", w.get("start"))
        words.append(Word(w_start, _number(path, here, "end", w.get("end")), token.strip()))
    return Segment(start, end, text.strip(), tuple(w for w in words if w.text))


def read_transcript_file(path: str | Path) -> list[Segment]:
    """Segments of a transcript file made elsewhere, sorted by start (see module doc)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problem = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
        raise InputFileError(path, None, f"cannot read the transcript ({problem})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"byte {exc.start}", "not UTF-8 text") from None
    if not text.strip():
        raise InputFileError(path, None, "the transcript file is empty")
    items: list[tuple[str, Any]]
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputFileError(
                    path, f"line {number}", f"invalid JSON ({exc.msg}): not a transcript file"
                ) from None
        items = [(w, v) for w, v in items if not (isinstance(v, dict) and "kind" in v)]
    if whole is not None:
        if isinstance(whole, dict) and isinstance(whole.get("segments"), list):
            whole = whole["segments"]
        if isinstance(whole, dict) and "start" in whole:
            whole = [whole]  # one segment: JSON lines of a single line
        if not isinstance(whole, list):
            raise InputFileError(
                path, None, "expected a list of segments {start, end, text} or {segments: [...]}"
            )
        items = [(f"segment {n}", v) for n, v in enumerate(whole)]
    segments = [_segment(path, where, item) for where, item in items]
    if not segments:
        raise InputFileError(path, None, "no segments in the transcript file")
    segments.sort(key=lambda s: (s.start, s.end))
    return segments
