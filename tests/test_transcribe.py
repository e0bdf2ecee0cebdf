"""Real faster-whisper on real speech: the streaming transcriber's word error rate."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from chatling.audio import iter_audio_chunks, load_audio
from chatling.core.errors import AudioError
from chatling.transcribe import StreamingTranscriber, TranscriberOptions
from tests.conftest import SPEECH, require_shared

_NUMBERS = {"fifteen": "15", "sixteen": "16", "fifty": "50", "hundred": "100"}


def normalise(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [_NUMBERS.get(w, w) for w in words]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d = d, np.empty_like(d)
        d[0] = i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return float(d[-1]) / max(len(ref), 1)


def test_word_error_rate_is_right_on_known_cases() -> None:
    assert word_error_rate("a b c d", "a b c d") == 0.0
    assert word_error_rate("a b c d", "a x c d") == 0.25
    assert word_error_rate("a b c d", "a b c") == 0.25
    assert word_error_rate("Hello, World!", "hello world") == 0.0


def transcribe_streaming(model, path, chunk_s: float = 0.5) -> str:
    transcriber = StreamingTranscriber(model, TranscriberOptions())
    utterances = []
    for chunk in iter_audio_chunks(path, chunk_s=chunk_s):
        utterances += transcriber.push(chunk)
    utterances += transcriber.flush()
    starts = [u.start for u in utterances]
    assert starts == sorted(starts), "utterances must come out in stream order"
    assert all(u.end > u.start for u in utterances)
    return " ".join(u.text for u in utterances)


def _references() -> list[tuple[str, str]]:
    speech = require_shared(SPEECH)
    refs = []
    with open(speech / "references.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["file"] == "jfk.flac":
                refs.append(("jfk.flac", row["reference_text"]))
    with open(speech / "ljspeech" / "transcripts.psv", encoding="utf-8") as f:
        for line in f:
            name, _, text = line.rstrip("\n").partition("|")
            if name:
                refs.append((f"ljspeech/{name}", text))
    return refs


def test_streaming_wer_under_10_percent_on_real_speech(whisper_model) -> None:
    refs = _references()
    assert len(refs) >= 20
    errors, words = 0.0, 0
    worst = []
    for name, reference in refs:
        hypothesis = transcribe_streaming(whisper_model, SPEECH / name)
        wer = word_error_rate(reference, hypothesis)
        n = len(normalise(reference))
        errors += wer * n
        words += n
        worst.append((wer, name, hypothesis))
        if name == "jfk.flac":
            assert wer < 0.10, f"jfk.flac WER {wer:.2%}: {hypothesis!r}"
    overall = errors / words
    worst.sort(reverse=True)
    assert overall < 0.10, f"corpus WER {overall:.2%}; worst: {worst[:3]}"


def test_utterance_times_follow_the_audio(whisper_model) -> None:
    """Speech placed after 3 s of silence is stamped after 3 s, not at 0."""
    speech = load_audio(require_shared(SPEECH) / "jfk.flac")
    audio = np.concatenate([np.zeros(3 * 16000, dtype=np.float32), speech])
    transcriber = StreamingTranscriber(whisper_model, TranscriberOptions())
    utterances = []
    for i in range(0, audio.size, 8000):
        utterances += transcriber.push(audio[i : i + 8000])
    utterances += transcriber.flush()
    assert utterances, "no speech found"
    assert 2.5 < utterances[0].start < 4.0
    assert utterances[-1].end <= audio.size / 16000 + 0.01


def test_silence_gives_no_utterances(whisper_model) -> None:
    transcriber = StreamingTranscriber(whisper_model, TranscriberOptions())
    out = transcriber.push(np.zeros(5 * 16000, dtype=np.float32)) + transcriber.flush()
    assert out == []


def test_corrupt_audio_names_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.opus"
    bad.write_bytes(b"OggS" + bytes(range(256)) * 40)
    with pytest.raises(AudioError, match=r"broken\.opus"):
        list(iter_audio_chunks(bad))
    with pytest.raises(AudioError, match=r"missing\.wav"):
        list(iter_audio_chunks(tmp_path / "missing.wav"))
