"""Bad files: every chat-log reader and the settings loader, fed broken input.

Targets, for each input file: ``read_chat_log`` with ``format="auto"`` and
with each named format (with and without a stream start and a time zone),
``inspect_chat_log`` and the ``chatling data inspect`` text
(``inspect_lines``); and ``load_settings`` on ``.env`` files. Inputs come
from hypothesis strategies (raw bytes, JSON shaped like each format with
wrong types, text lines in each format's grammar, ``.env`` lines) and from a
mutation fuzzer over real samples (``data/demo``, ``tests/data/chatlogs``,
``../shared/data/chat``, ``.env.example``): bit flips, byte swaps, truncation,
deletions, duplications, splices of two files, gzip and UTF-16 re-encodings.

What must hold for every input: nothing but a ``chatling.core.errors.ChatlingError``
escapes; an error about a file names that file (chat logs: ``InputFileError``
with ``path``; a JSON syntax error also its line and column); every call
finishes within ``TIME_LIMIT_S`` of CPU time (``signal.setitimer`` stops a
call that hangs at ``HARD_LIMIT_S`` of wall time).

Run: ``.venv/bin/python -m pytest -q tests/hardening/test_fuzz_readers.py``;
``CHATLING_HARDENING_FULL=1`` runs thousands of inputs and writes
``results/fuzz_readers.json``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import re
import shutil
import signal
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatling.chatlog import FORMATS, inspect_chat_log, read_chat_log
from chatling.cli.inspect import inspect_lines
from chatling.core.errors import ChatlingError, ConfigError, InputFileError
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import Settings, load_settings

pytestmark = [pytest.mark.hardening]

FULL = os.environ.get("CHATLING_HARDENING_FULL") == "1"
RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_readers.json"
SHARED = PROJECT_ROOT.parent / "shared" / "data"
TIME_LIMIT_S = 2.0
"""CPU seconds one call may take on one input."""
HARD_LIMIT_S = 20.0
"""Wall seconds after which a call is interrupted (a hang, not just slowness)."""
MUTATIONS = 4000 if FULL else 60
EXAMPLES = 600 if FULL else 25
STREAM_START = 1_700_000_000.0


def record(key: str, value: Any) -> None:
    """Full mode: merge ``{key: value}`` into ``results/fuzz_readers.json``."""
    if not FULL:
        return
    RESULTS.parent.mkdir(exist_ok=True)
    data = json.loads(RESULTS.read_text("utf-8")) if RESULTS.exists() else {}
    data[key] = value
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(tmp, RESULTS)


hypothesis_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timing is checked per call below, in CPU time
    derandomize=not FULL,  # the default suite is deterministic
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # clean_env: the same for every example
    ],
)


# -- calling a target under the rules ----------------------------------------------------------


class HardTimeout(BaseException):
    """Raised by the interval timer inside a call that hangs."""


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise HardTimeout

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Tally:
    """What the fuzzing saw: outcomes per target, the slowest call, and the failures."""

    inputs: int = 0
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    max_cpu_s: float = 0.0
    slowest: str = ""
    failures: list[str] = field(default_factory=list)

    def call(self, name: str, path: Path | None, fn: Callable[[], Any]) -> None:
        """Run one target on one input and check the rules; failures are collected."""
        self.calls += 1
        started = time.thread_time()
        try:
            with hard_limit(HARD_LIMIT_S):
                fn()
            outcome = "ok"
        except HardTimeout:
            outcome = "hang"
            self.failures.append(f"{name}: no answer within {HARD_LIMIT_S} s on {path}")
        except ChatlingError as exc:
            outcome = type(exc).__name__
            problem = error_problem(exc, path)
            if problem:
                self.failures.append(f"{name}: {problem}: {exc}")
        except Exception as exc:  # the point: anything else is a finding
            outcome = f"ESCAPED {type(exc).__name__}"
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.failures.append(
                f"{name}: {type(exc).__name__}: {str(exc)[:120]} "
                f"at {Path(where.filename).name}:{where.lineno} on {path}"
            )
        cpu = time.thread_time() - started
        if cpu > self.max_cpu_s:
            self.max_cpu_s, self.slowest = cpu, name
        if cpu > TIME_LIMIT_S:
            self.failures.append(f"{name}: {cpu:.2f} s of CPU on {path}")
        self.outcomes[f"{name.split('[')[0]}: {outcome}"] += 1

    def merge(self, other: Tally) -> None:
        self.inputs += other.inputs
        self.calls += other.calls
        self.outcomes.update(other.outcomes)
        if other.max_cpu_s > self.max_cpu_s:
            self.max_cpu_s, self.slowest = other.max_cpu_s, other.slowest
        self.failures += other.failures

    def summary(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "calls": self.calls,
            "failures": len(self.failures),
            "max_cpu_s_per_call": round(self.max_cpu_s, 3),
            "slowest_target": self.slowest,
            "outcomes": dict(sorted(self.outcomes.items())),
        }


def error_problem(exc: ChatlingError, path: Path | None) -> str | None:
    """What is wrong with a ChatlingError's message, or None."""
    message = str(exc)
    if path is None:
        return None
    if isinstance(exc, InputFileError):
        if exc.path != path:
            return f"names {exc.path}, not the input"
        if exc.problem.startswith("invalid JSON") and not (
            exc.where and re.search(r"line \d+", exc.where)
        ):
            return "a JSON syntax error without its line"
        return None
    if str(path) not in message and path.name not in message:
        return "does not name the file"
    return None


def chatlog_targets(path: Path) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Every way chatling reads a chat log, on ``path``."""
    yield "read auto", lambda: read_chat_log(path)
    yield "read auto+start", lambda: read_chat_log(path, stream_start=STREAM_START)
    for name in FORMATS:
        yield (
            f"read[{name}]",
            lambda name=name: read_chat_log(
                path, format=name, stream_start=STREAM_START, timezone="Europe/Berlin"
            ),
        )
    yield "inspect", lambda: inspect_chat_log(path)
    yield "inspect+start", lambda: inspect_chat_log(path, stream_start=STREAM_START)
    yield "inspect_lines", lambda: inspect_lines(path)


def check_chatlog(tally: Tally, path: Path) -> None:
    tally.inputs += 1
    for name, fn in chatlog_targets(path):
        tally.call(name, path, fn)


def assert_clean(tally: Tally, context: str = "") -> None:
    shown = "\n".join(dict.fromkeys(tally.failures))  # unique, in order
    assert not tally.failures, f"{context}{len(tally.failures)} failures:\n{shown[:6000]}"


# -- samples --------------------------------------------------------------------------------


def _small_northernlion() -> bytes | None:
    """The first 300 comments of the Northernlion log, re-dumped (kept in memory only)."""
    path = SHARED / "chat" / "northernlion-1087079172.json"
    if not path.exists():
        return None
    data = json.loads(path.read_bytes())
    if isinstance(data, dict):
        data["comments"] = data.get("comments", [])[:300]
    return json.dumps(data).encode()


def chatlog_samples() -> dict[str, bytes]:
    """Real sample files by name (a small cut of the big shared log; all of it in full mode)."""
    samples = {
        p.name: p.read_bytes()
        for p in sorted((PROJECT_ROOT / "tests" / "data" / "chatlogs").iterdir())
        if p.suffix != ".md"
    }
    for name in ("chat.json", "clip_chat.json"):
        samples[f"demo-{name}"] = (PROJECT_ROOT / "data" / "demo" / name).read_bytes()
    small = _small_northernlion()
    if small is not None:
        samples["northernlion-300.json"] = small
        if FULL:
            samples["northernlion.json"] = (
                SHARED / "chat" / "northernlion-1087079172.json"
            ).read_bytes()
    return samples


_INTERESTING = [b"\x00", b"\xff", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\n", b"\\", b"9"]
_INTERESTING += [b"-", b".", b"e", b"null", b"1e999", b"NaN", b"\r", b"\xe2\x80", b"\t", b" "]


def mutate(rng: random.Random, data: bytes, other: bytes) -> tuple[str, bytes]:
    """One random mutation of ``data`` (``other`` is another sample, for splices)."""
    kind = rng.choice(
        ["flip", "flip", "bytes", "truncate", "delete", "duplicate", "splice", "insert", "swap"]
    )
    n = len(data)
    if n == 0:
        return "insert", rng.randbytes(rng.randint(1, 16))
    at = rng.randrange(n)
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "bytes":
        return kind, data[:at] + rng.choice(_INTERESTING) + data[at + 1 :]
    if kind == "truncate":
        return kind, data[:at]
    if kind == "delete":
        return kind, data[:at] + data[at + rng.randint(1, 64) :]
    if kind == "duplicate":
        end = min(n, at + rng.randint(1, 256))
        return kind, data[:end] + data[at:end] + data[end:]
    if kind == "splice":
        cut = rng.randrange(len(other)) if other else 0
        return kind, data[:at] + other[cut:]
    if kind == "insert":
        return kind, data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
    # swap two lines (text) or two chunks
    lines = data.split(b"\n")
    if len(lines) > 2:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return kind, b"\n".join(lines)


def encode(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Sometimes re-encode (gzip, UTF-16, a BOM, CRLF) before or after mutating."""
    roll = rng.random()
    if roll < 0.12:
        return "gzip", gzip.compress(data, mtime=0)
    if roll < 0.18:
        text = data.decode("utf-8", errors="replace")
        return "utf16", text.encode(rng.choice(["utf-16", "utf-16-le", "utf-16-be"]))
    if roll < 0.22:
        return "bom", b"\xef\xbb\xbf" + data
    if roll < 0.26:
        return "crlf", data.replace(b"\n", b"\r\n")
    return "plain", data


# -- the mutation fuzzer ---------------------------------------------------------------------


def test_mutated_real_chat_logs_fail_cleanly(tmp_path: Path) -> None:
    samples = chatlog_samples()
    names = sorted(samples)
    seed = int(os.environ.get("CHATLING_FUZZ_SEED", "0" if not FULL else str(int(time.time()))))
    rng = random.Random(seed)  # a failure names the seed: CHATLING_FUZZ_SEED=<seed> replays it
    tally = Tally()
    # The unmutated samples first: all of them must read or fail cleanly too.
    for name in names:
        path = tmp_path / f"orig-{name}"
        path.write_bytes(samples[name])
        check_chatlog(tally, path)
    kinds: Counter[str] = Counter()
    for i in range(MUTATIONS):
        name = rng.choice(names)
        other = samples[rng.choice(names)]
        how, data = encode(rng, samples[name])
        kind, data = mutate(rng, data, other)
        if how == "gzip" or rng.random() < 0.3:
            kind, data = mutate(rng, data, other)  # a second mutation (gzip: of the bytes)
        kinds[f"{how}+{kind}"] += 1
        suffix = rng.choice([Path(name).suffix, ".json", ".txt", ".log", ".jsonl", ".json.gz"])
        path = tmp_path / f"m{i:05d}{suffix}"
        path.write_bytes(data)
        check_chatlog(tally, path)
        path.unlink()
    record(
        "mutation", {**tally.summary(), "seed": seed, "samples": names, "mutations": dict(kinds)}
    )
    assert_clean(tally, f"seed {seed}: ")


# -- hypothesis: raw bytes, format-shaped JSON, format-shaped text -----------------------------

_WORK = Path(tempfile.mkdtemp(prefix="chatling-fuzz-"))
"""Where hypothesis examples are written (tmp_path is per test, not per example)."""


@pytest.fixture(scope="module", autouse=True)
def _remove_work_dir() -> Iterator[None]:
    yield
    shutil.rmtree(_WORK, ignore_errors=True)


def _write(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=_WORK)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


@contextlib.contextmanager
def input_file(data: bytes, suffix: str) -> Iterator[Path]:
    path = _write(data, suffix)
    try:
        yield path
    finally:
        path.unlink()


def check_example(data: bytes, suffix: str) -> None:
    """One hypothesis example: its own tally (so one finding fails one test), merged after."""
    tally = Tally()
    with input_file(data, suffix) as path:
        check_chatlog(tally, path)
    _HYPO.merge(tally)
    assert_clean(tally)


_HYPO = Tally()

_DIGITS = st.one_of(
    st.integers(min_value=0, max_value=10**40).map(str),
    st.sampled_from(["", "0", "²", "٣", "١٧٠٠٠٠٠٠٠٠٠٠٠", "9" * 400, "9" * 5000, "-5", "abc"]),
)
"""Digit strings as tags and text carry them: huge, empty, and Unicode digits ``isdigit`` takes."""
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 1e308]),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["", "0", "1.5", "2023-11-14T12:00:00Z", "1700000000", "NaN", "12:34:56"]),
    _DIGITS,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _fields(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=len(keys))


_COMMENT_KEYS = [
    "_id",
    "created_at",
    "content_offset_seconds",
    "commenter",
    "message",
    "channel_id",
    "content_type",
    "source",
    "state",
]
_MESSAGE_KEYS = ["body", "fragments", "emoticons", "user_badges", "user_color", "is_action"]
_COMMENTER_KEYS = ["display_name", "_id", "name", "logo"]
_CD_KEYS = [
    "timestamp",
    "time_in_seconds",
    "time_text",
    "message",
    "message_id",
    "message_type",
    "author",
    "emotes",
]
_JUSTLOG_KEYS = ["text", "username", "displayName", "channel", "timestamp", "id", "type", "raw"]


def _comment() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda base, message, commenter: {**base, "message": message, "commenter": commenter},
        _fields(_COMMENT_KEYS),
        st.one_of(_fields(_MESSAGE_KEYS), json_values),
        st.one_of(_fields(_COMMENTER_KEYS), json_values),
    )


shaped_json = st.one_of(
    # TwitchDownloader JSON
    st.builds(
        lambda info, video, comments: {
            "FileInfo": info,
            "streamer": {"name": "s", "id": 1},
            "video": video,
            "comments": comments,
        },
        st.one_of(_fields(["Version", "CreatedAt"]), json_values),
        st.one_of(_fields(["start", "end", "length", "duration", "created_at"]), json_values),
        st.one_of(st.lists(_comment(), max_size=4), json_values),
    ),
    # Twitch v5: object and bare array
    st.builds(
        lambda v, c: {"video": v, "comments": c}, json_values, st.lists(_comment(), max_size=4)
    ),
    st.lists(_comment(), min_size=1, max_size=4),
    # chat-downloader
    st.lists(_fields(_CD_KEYS), min_size=1, max_size=4),
    # chat-downloader with emote locations
    st.lists(
        st.builds(
            lambda loc, t: {
                "time_in_seconds": 1.5,
                "message": t,
                "message_type": "text_message",
                "author": {"name": "a"},
                "emotes": [{"name": "Kappa", "locations": loc}],
            },
            st.one_of(
                _DIGITS.map(lambda d: f"{d}-4"), _DIGITS.map(lambda d: [f"0-{d}"]), json_values
            ),
            st.text(max_size=30),
        ),
        min_size=1,
        max_size=3,
    ),
    # justlog JSON
    st.builds(lambda m: {"messages": m}, st.lists(_fields(_JUSTLOG_KEYS), max_size=4)),
    json_values,
)


@hypothesis_settings
@given(value=shaped_json, lines=st.booleans(), suffix=st.sampled_from([".json", ".jsonl"]))
def test_format_shaped_json_with_wrong_types_fails_cleanly(
    value: Any, lines: bool, suffix: str
) -> None:
    if lines and isinstance(value, list):
        data = "\n".join(json.dumps(v) for v in value).encode()
    else:
        data = json.dumps(value).encode()
    check_example(data, suffix)


_USER = st.from_regex(r"[A-Za-z0-9_]{0,12}", fullmatch=True)
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_NUM = st.one_of(st.integers(min_value=0, max_value=99).map(str), _DIGITS)
text_line = st.one_of(
    st.builds(lambda h, m, s, u, t: f"[{h}:{m}:{s}] {u}: {t}", _NUM, _NUM, _NUM, _USER, _TEXT),
    st.builds(
        lambda y, mo, d, h, u, t: f"[{y}-{mo}-{d} {h}:00:00 UTC] {u}: {t}",
        st.integers(0, 9999).map(str),
        _NUM,
        _NUM,
        _NUM,
        _USER,
        _TEXT,
    ),
    st.builds(
        lambda d, c, u, t: f"[2023-11-{d} 12:00:00] #{c} {u}: {t}", _NUM, _USER, _USER, _TEXT
    ),
    st.builds(
        lambda tags, u, c, t: f"@{tags} :{u}!{u}@{u}.tmi.twitch.tv PRIVMSG #{c} :{t}",
        st.from_regex(
            r"[a-z\-]{1,10}=[^ ;]{0,20}(;[a-z\-]{1,10}=[^ ;]{0,20}){0,4}", fullmatch=True
        ),
        _USER,
        _USER,
        _TEXT,
    ),
    st.builds(
        lambda ts, a, b, u, c, t: (
            f"@display-name={u};emotes=25:{a}-{b};id=x;room-id=1;tmi-sent-ts={ts};user-id=1 "
            f":{u}!{u}@{u}.tmi.twitch.tv PRIVMSG #{c} :{t}"
        ),
        _DIGITS,
        _DIGITS,
        _DIGITS,
        _USER,
        _USER,
        _TEXT,
    ),
    st.builds(
        lambda d, ts, u: (
            f"@ban-duration={d};room-id=1;target-user-id=2;tmi-sent-ts={ts} "
            f":tmi.twitch.tv CLEARCHAT #chan :{u}"
        ),
        _DIGITS,
        _DIGITS,
        _USER,
    ),
    st.builds(
        lambda d, u: f"[2023-11-14 12:00:00] #chan {u} has been timed out for {d} seconds",
        _DIGITS,
        _USER,
    ),
    st.builds(
        lambda tz: f"# Start logging at 2023-11-14 12:00:00 {tz}",
        st.one_of(
            st.sampled_from(["CET", "UTC", "CST", "XYZ", "+02:00", "", "Mars/Olympus"]),
            _DIGITS.map(lambda d: f"+{d}:00"),
            _DIGITS.map(lambda d: f"Europe/{d}"),
            _TEXT,
        ),
    ),
    st.builds(lambda h, u, t: f"[{h}:00:00]  {u}: {t}", _NUM, _USER, _TEXT),
    st.sampled_from(["# Stop logging at 2023-11-14 13:00:00 CET", "", "   ", "\x01ACTION\x01"]),
    st.builds(lambda u, t: f"{u}: {t}", _USER, _TEXT),
    _TEXT,
)


_NUMBER_SLOT = "{N}"
_JSON_TEMPLATES = [
    '{"video": {"id": "1"}, "comments": [{"_id": "a", "content_offset_seconds": {N},'
    ' "commenter": {"name": "a"}, "message": {"body": "hi"}}]}',
    '[{"message": "hi", "message_type": "text_message", "time_in_seconds": {N},'
    ' "timestamp": {N}, "author": {"name": "a"}}]',
    '{"message": "hi", "message_type": "text_message", "timestamp": {N}, "author": {"name": "a"}}',
    '{"FileInfo": {"Version": "{N}.4.0"}, "streamer": {"name": "s"}, "video": {"start": {N}},'
    ' "comments": [{"content_offset_seconds": 1.5, "commenter": {"name": "a"},'
    ' "message": {"body": "hi"}}]}',
    '{"messages": [{"text": "hi", "username": "a", "displayName": "A", "channel": "c",'
    ' "timestamp": "2023-11-14T12:00:00Z", "id": "x", "type": 1, "raw": "",'
    ' "tags": {"tmi-sent-ts": "{N}"}}]}',
]


@hypothesis_settings
@given(
    template=st.sampled_from(_JSON_TEMPLATES),
    number=st.one_of(
        st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
        st.sampled_from(["1e999", "-1e999", "²", "١٧٠٠٠٠٠٠٠٠", "0.0000001", "-0"]),
        st.integers().map(str),
    ),
)
def test_json_numbers_out_of_range_fail_cleanly(template: str, number: str) -> None:
    check_example(template.replace(_NUMBER_SLOT, number).encode(), ".json")


@hypothesis_settings
@given(
    lines=st.lists(text_line, min_size=1, max_size=12),
    suffix=st.sampled_from([".txt", ".log"]),
    crlf=st.booleans(),
)
def test_format_shaped_text_lines_fail_cleanly(lines: list[str], suffix: str, crlf: bool) -> None:
    data = ("\r\n" if crlf else "\n").join(lines).encode("utf-8", errors="surrogatepass")
    check_example(data, suffix)


@hypothesis_settings
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".json", ".txt", ".json.gz"]))
def test_arbitrary_bytes_fail_cleanly(data: bytes, suffix: str) -> None:
    check_example(data, suffix)


def test_record_hypothesis_tally() -> None:
    """Runs after the hypothesis tests above (file order): their counts into the results."""
    record("hypothesis_chatlogs", _HYPO.summary())


# -- settings --------------------------------------------------------------------------------


def _setting_keys() -> list[str]:
    keys = ["CHATLING_LOG_LEVEL"]
    for group, info in Settings.model_fields.items():
        if info.default_factory is None:
            continue
        keys.append(f"CHATLING_{group.upper()}")
        keys += [
            f"CHATLING_{group.upper()}__{key.upper()}"
            for key in type(info.default_factory()).model_fields  # type: ignore[call-arg]
        ]
    return keys


SETTING_KEYS = _setting_keys()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHATLING_* variable from the caller's environment leaks into these tests."""
    for key in list(os.environ):
        if key.startswith("CHATLING_"):
            monkeypatch.delenv(key)


_SETTINGS_TALLY = Tally()


def check_settings(tally: Tally, data: bytes) -> None:
    tally.inputs += 1
    with input_file(data, ".env") as path:
        tally.call("load_settings", path, lambda: load_settings(path))


def check_settings_example(data: bytes) -> None:
    tally = Tally()
    check_settings(tally, data)
    _SETTINGS_TALLY.merge(tally)
    assert_clean(tally)


env_value = st.one_of(
    _TEXT,
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(['["a", "b"]', "[", "{", "{}", '{"x": 1}', "true", "null", "1e999", "nan"]),
    st.sampled_from(['"unterminated', "'single'", '"a"b"', "\\", "${HOME}", "a # comment"]),
    json_values.map(json.dumps),
)
env_line = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SETTING_KEYS), env_value),
    st.builds(lambda k, v: f"export {k}={v}", st.sampled_from(SETTING_KEYS), env_value),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(SETTING_KEYS), env_value),
    st.sampled_from(["# comment", "", "NOT_OURS=1", "=novalue", "CHATLING_", "CHATLING_X__Y=1"]),
    _TEXT,
)


@hypothesis_settings
@given(lines=st.lists(env_line, max_size=8), junk=st.binary(max_size=8))
def test_fuzzed_env_files_give_config_errors(
    clean_env: None, lines: list[str], junk: bytes
) -> None:
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    check_settings_example(data)
    check_settings_example(data + junk)


def test_mutated_env_example_gives_config_errors(clean_env: None) -> None:
    sample = (PROJECT_ROOT / ".env.example").read_bytes()
    rng = random.Random(1)
    filled = sample.replace(b"CHATLING_REPLY__EXTRA_BLOCKED_TERMS=[]", b'X=["a"]')
    tally = Tally()
    for _ in range(MUTATIONS // 2):
        _, data = mutate(rng, rng.choice([sample, filled]), sample)
        check_settings(tally, data)
    _SETTINGS_TALLY.merge(tally)
    record("settings", _SETTINGS_TALLY.summary())
    assert_clean(tally)


# -- regressions: what the fuzzing found -------------------------------------------------------


def _error(fn: Callable[[], Any]) -> ChatlingError:
    with pytest.raises(ChatlingError) as caught:
        fn()
    return caught.value


def test_env_file_not_utf8_is_a_config_error_naming_file_and_byte(
    clean_env: None, tmp_path: Path
) -> None:
    env = tmp_path / "bad.env"
    env.write_bytes(b"CHATLING_LOG_LEVEL=INFO\nCHATLING_REPLY__BOT_NAME=caf\xe9\n")
    exc = _error(lambda: load_settings(env))
    assert isinstance(exc, ConfigError)
    assert str(env) in str(exc) and "line 2" in str(exc)


def test_env_file_with_broken_json_is_a_config_error_naming_file_and_key(
    clean_env: None, tmp_path: Path
) -> None:
    env = tmp_path / "bad.env"
    env.write_text('CHATLING_LOG_LEVEL=INFO\nCHATLING_REPLY__EXTRA_BLOCKED_TERMS=["a"\n')
    exc = _error(lambda: load_settings(env))
    assert isinstance(exc, ConfigError)
    assert str(env) in str(exc) and "CHATLING_REPLY__EXTRA_BLOCKED_TERMS" in str(exc)
    assert "line 2" in str(exc)
    group = tmp_path / "group.env"
    group.write_text("CHATLING_TWITCH={not json\n")
    exc = _error(lambda: load_settings(group))
    assert str(group) in str(exc) and "CHATLING_TWITCH" in str(exc)


_HUGE = "9" * 5000
_IRC = (
    "@display-name=Foo;emotes={emotes};id=u;room-id=1;tmi-sent-ts={ts};user-id=1 "
    ":foo!foo@foo.tmi.twitch.tv PRIVMSG #chan :Kappa hi\n"
)
READER_REGRESSIONS = {
    # a JSON integer past 1e308: float() overflowed in base.seconds
    "v5-offset-1e400.json": '{"video": {"id": "1"}, "comments": [{"_id": "a",'
    ' "content_offset_seconds": 1' + "0" * 400 + ', "commenter": {"name": "a"},'
    ' "message": {"body": "hi"}}]}',
    # a JSON number of more than 4300 digits: json.loads raised a bare ValueError
    "cd-offset-5000-digits.json": '[{"time_in_seconds": ' + _HUGE + ', "message": "hi",'
    ' "message_type": "text_message", "author": {"name": "a"}}]',
    "cd-lines-5000-digits.jsonl": '{"timestamp": ' + _HUGE + ', "message": "hi",'
    ' "message_type": "text_message", "author": {"name": "a"}}\n',
    # an emote location of 5000 digits: int() refused it
    "cd-emote-location.json": '[{"time_in_seconds": 1, "message": "Kappa hi",'
    ' "message_type": "text_message", "author": {"name": "a"},'
    ' "emotes": [{"name": "Kappa", "locations": "' + _HUGE + '-4"}]}]',
    # tmi-sent-ts of 400 digits: integer division overflowed; "²" passed isdigit()
    "irc-ts-400-digits.txt": _IRC.format(emotes="25:0-4", ts="9" * 400),
    "irc-ts-superscript.txt": _IRC.format(emotes="25:0-4", ts="17²"),
    "irc-emote-range.txt": _IRC.format(emotes=f"25:0-{_HUGE}", ts="1700000000000"),
    "irc-ban-superscript.txt": "@ban-duration=²;room-id=1;target-user-id=2;"
    "tmi-sent-ts=1700000000000 :tmi.twitch.tv CLEARCHAT #chan :foo\n"
    + _IRC.format(emotes="25:0-4", ts="1700000001000"),
    "justlog-ts-400-digits.json": '{"messages": [{"text": "hi", "username": "a",'
    ' "displayName": "A", "channel": "c", "timestamp": "2023-11-14T12:00:00Z", "id": "x",'
    ' "type": 1, "raw": "", "tags": {"tmi-sent-ts": "' + "9" * 400 + '"}}]}',
    # a time past year 9999: inspect's date formatting raised
    "justlog-year-33658.json": '{"messages": [{"text": "hi", "username": "a",'
    ' "displayName": "A", "channel": "c", "timestamp": "2023-11-14T12:00:00Z", "id": "x",'
    ' "type": 1, "raw": "", "tags": {"tmi-sent-ts": "999999999999999"}}]}',
    # a zone name too long for a file name: ZoneInfo raised OSError
    "chatterino-zone.log": f"# Start logging at 2023-11-14 12:00:00 Europe/{_HUGE}\n"
    "[12:00:01]  foo: hi\n",
    # a TwitchDownloader version of 5000 digits / "²"
    "td-version.json": '{"FileInfo": {"Version": "' + _HUGE + '.4.0"}, "streamer": {"name": "s"},'
    ' "comments": [{"content_offset_seconds": 1.5, "commenter": {"name": "a"},'
    ' "message": {"body": "hi"}}]}',
}


@pytest.mark.parametrize("name", sorted(READER_REGRESSIONS))
def test_reader_regressions_fail_cleanly_or_read(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(READER_REGRESSIONS[name], encoding="utf-8")
    tally = Tally()
    check_chatlog(tally, path)
    assert_clean(tally)
    lines = inspect_lines(path)
    assert lines[0] == f"file: {path}" or lines[0].startswith("format:"), lines
