"""Settings, read once at start from the environment and ``.env``.

Keys are grouped (``CHATLING_MODEL__NAME``, ``CHATLING_REPLY__BOT_NAME``...);
every token is a ``SecretStr`` so it is masked in reprs, logs and
``chatling config check``. Modules receive the group they need, never the
environment.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from chatling.core.errors import ConfigError


class _Group(BaseModel):
    """A settings group; attribute docstrings become the descriptions in ``.env.example``."""

    model_config = ConfigDict(use_attribute_docstrings=True, validate_assignment=True)


class TwitchSettings(_Group):
    """The bot account and the channel it chats in."""

    channel: str = ""
    """Channel (login) to chat in; empty disables Twitch."""
    bot_login: str = ""
    """Login of the bot's own Twitch account."""
    client_id: str = ""
    """Client id of your Twitch application (dev.twitch.tv/console)."""
    client_secret: SecretStr = SecretStr("")
    """Client secret of your Twitch application."""
    bot_token: SecretStr = SecretStr("")
    """User access token of the bot account (`chatling auth twitch` fills it)."""
    refresh_token: SecretStr = SecretStr("")
    """Refresh token of the bot account."""
    is_moderator: bool = False
    """True when the bot is a moderator: allows the higher chat rate limit."""
    known_bots: list[str] = Field(
        default_factory=lambda: ["nightbot", "streamelements", "moobot", "fossabot", "streamlabs"]
    )
    """Accounts stored but never replied to (JSON list)."""
    command_prefix: str = "!chatling"
    """Prefix of the moderators' chat commands (pause, resume, status)."""
    token_file: str = "data/twitch-tokens.json"
    """Where `chatling auth twitch` saves the bot's tokens (mode 0600)."""
    drop_backoff_s: float = 30.0
    """Seconds to stop sending after Twitch drops or refuses a message."""
    helix_url: str = ""
    """Helix API base URL; empty: Twitch's own (set it for `twitch mock-api` or a test fake)."""
    id_url: str = ""
    """id.twitch.tv base URL (OAuth); empty: Twitch's own."""
    eventsub_url: str = ""
    """EventSub websocket URL; empty: Twitch's own."""


class DiscordSettings(_Group):
    """The Discord application that answers ``/chat``."""

    token: SecretStr = SecretStr("")
    """Discord bot token; empty disables Discord."""
    guild_id: int | None = None
    """Sync /chat to this server only (fast); unset syncs globally."""
    cooldown_s: float = 10.0
    """Seconds a user waits between two /chat commands."""


class AudioSettings(_Group):
    """Where stream audio comes from and how it is transcribed."""

    enabled: bool = True
    """Transcribe the stream audio from the loopback device in `chatling run`."""
    device: str | None = None
    """Loopback device to record (see `chatling audio devices`); unset: default output."""
    whisper_model: str = "data/models/whisper-base-ct2"
    """faster-whisper model: a CTranslate2 directory or a model name."""
    language: str | None = "en"
    """Language spoken on stream (unset: detect)."""
    beam_size: int = 1
    """Whisper beam size: 1 is fastest, 5 a little more accurate."""
    compute_type: str = "int8"
    """CTranslate2 compute type (int8 on CPU, float16 on GPU)."""
    cpu_threads: int = 0
    """Whisper CPU threads (0: CTranslate2's default)."""
    chunk_s: float = 0.5
    """Seconds of audio handed to the transcriber per step (a pause is seen this much late)."""
    max_utterance_s: float = 12.0
    """Commit an utterance this long even without a pause."""
    silence_commit_s: float = 0.5
    """A pause this long after speech commits the utterance."""


class ModelSettings(_Group):
    """The language model: vLLM in-process or a vLLM server."""

    name: str = "data/models/smollm2-135m-instruct"
    """Model directory or Hugging Face id (default: the packaged SmolLM2-135M-Instruct)."""
    adapter: str | None = None
    """LoRA adapter directory to load at start."""
    max_model_len: int = 2048
    """Longest prompt + reply in tokens."""
    tensor_parallel_size: int = 1
    """GPUs to shard the model over."""
    gpu_memory_utilization: float = 0.5
    """Share of GPU memory vLLM may take (leave room for training beside it)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (the persona)."""
    enforce_eager: bool = True
    """Skip torch.compile: starts in about half the time; see bench/results."""
    max_lora_rank: int = 16
    """Largest LoRA rank an adapter may have."""
    dtype: str = "bfloat16"
    """Weights' dtype."""
    cpu_kvcache_gib: int = 2
    """KV cache size on CPU (GiB)."""
    seed: int = 0
    """Seed of sampling and of the quiet-interval jitter."""
    backend: Literal["inprocess", "server"] = "inprocess"
    """inprocess: vLLM inside the bot; server: a vLLM server at server_url (`chatling serve`)."""
    server_url: str = "http://127.0.0.1:8000"
    """Base URL of the vLLM server (backend=server; `chatling serve` listens on its port)."""
    server_api_key: SecretStr = SecretStr("")
    """API key of the vLLM server (its --api-key); empty: none."""
    server_connect_timeout_s: float = 5.0
    """Seconds to connect to the vLLM server before a request fails."""
    server_stall_timeout_s: float = 30.0
    """Seconds without a streamed token before a reply counts as stalled and is dropped."""
    server_request_timeout_s: float = 120.0
    """Longest a whole request to the vLLM server may take (a reply, an adapter load)."""
    pipeline_parallel_size: int = 1
    """Pipeline stages (machines or GPU groups) of `chatling serve`."""


class ReplySettings(_Group):
    """When and how the bot speaks."""

    bot_name: str = "chatling"
    """The name chat uses to address the bot."""
    persona_file: str = "prompts/persona.txt"
    """System prompt (persona) file."""
    template_file: str = "prompts/reply.txt"
    """Reply prompt template file of the `chat` prompt form (addressed.txt beside it)."""
    prompt_form: Literal["log", "chat"] = "log"
    """`log`: the model continues the stream's chat log with one line of its own (plain
    text, no chat template); `chat`: persona + instructions in the model's chat template.
    Chosen on DougDoug validation (docs/results.md, "What the bot writes")."""
    log_template_file: str = "prompts/chatlog.txt"
    """Prompt template of the `log` prompt form."""
    blocked_terms_file: str = "prompts/blocked_terms.txt"
    """Default blocked-terms list, one term a line."""
    extra_blocked_terms: list[str] = Field(default_factory=list)
    """Your own blocked terms (JSON list)."""
    transcript_window_s: float = 60.0
    """Seconds of recent speech the prompt shows."""
    max_chat_messages: int = 20
    """Recent chat messages the prompt shows."""
    prompt_token_budget: int = 768
    """Token budget of transcript + chat lines in the prompt."""
    prompt_length_grid: int = Field(default=32, ge=0, le=256)
    """Prompt lengths are kept on a grid of this many tokens by trimming the start of the
    oldest transcript line (0 or 1: off). vLLM's CPU matmul kernels keep a compiled
    primitive per token count; every new prompt length grew the engine's memory by
    ~1 MiB (bench/engine_memory.py), a grid of 32 stops that."""
    candidates: int = 4
    """Candidates generated per reply (one request, shared prompt)."""
    max_tokens: int = 32
    """Longest reply in tokens."""
    temperature: float = 0.9
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling threshold."""
    min_p: float = 0.0
    """Drop tokens less likely than this share of the most likely one (0: off)."""
    chooser: Literal["first", "score", "likelihood", "topical"] = "first"
    """How one allowed candidate is picked: `first` (the first in sampling order, i.e. a
    draw from the model's own distribution), `score` (the heuristic of chatling/scoring.py),
    `likelihood` (the highest mean token log-probability under the serving model) or
    `topical` (the most words shared with the prompt's recent chat, chatling/topical.py)."""
    burst_messages: int = 12
    """This many chat messages within burst_window_s count as a burst."""
    burst_window_s: float = 10.0
    """Window of the burst trigger (seconds)."""
    quiet_interval_s: float = 45.0
    """Speak after this many quiet seconds."""
    quiet_jitter_s: float = 15.0
    """Random +/- seconds on the quiet interval."""
    global_cooldown_s: float = 15.0
    """Seconds between two replies, whatever triggers them."""
    user_cooldown_s: float = 30.0
    """Seconds before answering the same viewer again."""
    rate_messages: int = 12
    """Messages allowed per rate_window_s: well under Twitch's 20 / 30 s."""
    rate_window_s: float = 30.0
    """Window of the rate limit (seconds)."""
    moderator_rate_messages: int = 80
    """Used instead when the bot is a moderator: under Twitch's 100 / 30 s."""
    max_chars: int = 500
    """Longest message posted (Twitch's limit is 500)."""
    duplicate_window_s: float = 300.0
    """Never post a copy of a chat message from this many seconds back (but see chant_min)."""
    chant_min: int = Field(default=2, ge=0)
    """Join a chant: a copy of a recent line is allowed once this many other viewers posted
    it and the bot has not (0: never copy). Chosen on validation (docs/results.md)."""
    allowed_links: list[str] = Field(default_factory=list)
    """Links the bot may post (JSON list, e.g. your socials: ["youtube.com/@you"])."""
    offensive_threshold: float = Field(default=0.95, ge=0.0, le=1.01)
    """Classifier score from which an insult aimed at someone is blocked (1.01: off)."""


class StorageSettings(_Group):
    """Where the SQLite log lives and how often it is flushed."""

    db_path: str = "data/chatling.sqlite"
    """SQLite log of speech, chat and replies."""
    flush_interval_s: float = 0.5
    """Longest time an event waits before it is committed."""
    max_batch: int = 500
    """Commit early when this many events wait."""


class ScheduleSettings(_Group):
    """The nightly retrain."""

    enabled: bool = False
    """Run the nightly retrain inside `chatling run`."""
    cron: str = "0 4 * * *"
    """When to retrain (crontab syntax)."""
    timezone: str = "UTC"
    """Time zone of the cron expression."""
    only_when_offline: bool = True
    """Skip the retrain while the stream is live."""
    good_command: str = "!good"
    """Twitch: a moderator replies to a bot message with this to mark it good."""
    bad_command: str = "!bad"
    """Twitch: a moderator replies to a bot message with this to mark it bad (never learnt)."""
    good_reaction: str = "👍"
    """Discord: a moderator's reaction that marks a /chat answer good."""
    bad_reaction: str = "👎"
    """Discord: a moderator's reaction that marks a /chat answer bad."""
    live_idle_minutes: float = 10.0
    """The stream counts as live while chat or speech arrived within this many minutes."""
    adapters_dir: str = "data/adapters"
    """Versioned adapters and the pointer to the active one (active.json)."""
    runs_dir: str = "data/runs/nightly"
    """Work directories of retrain runs (datasets, logs, evaluation reports)."""
    base_data: str | None = None
    """Pairs dataset to always train on besides the logs (unset: the active adapter's)."""
    preset: str = "cpu-tiny"
    """Training preset of the retrain (see `chatling train --help`)."""
    base_model: str | None = None
    """Base model to train on (unset: the preset's, as served)."""
    max_steps: int | None = None
    """Cap on training steps per run (unset: the preset's epochs)."""
    min_new_pairs: int = 50
    """Fewer new pairs than this since the last run: skip training."""
    min_preference_pairs: int = 8
    """Moderator-marked preference pairs needed before the DPO step runs."""
    eval_points: int = 200
    """Held-out points the gate scores both adapters on."""
    gate_generations: int = 32
    """Sampled replies per adapter for the gate's blocked-share and writing checks."""
    gate_ranking: Literal["reported", "required"] = "reported"
    """Recall@10 and MRR in the gate: `reported` (computed and recorded, a drop does not stop
    promotion) or `required` (a drop beyond the margin refuses the adapter). Reported by
    default: on DougDoug the adapter whose posts read most like chat ranks the real message
    worse than the base model (MRR -0.16), which `required` would refuse (docs/results.md,
    round 4); perplexity of the real messages and the blocked share still gate."""
    gate_rank_margin: float = 0.01
    """Drop in R@10 or MRR (absolute) the new adapter may show, all of its interval below
    zero, before the gate calls it worse: a few thousandths is noise, not a worse model."""
    gate_blocked_margin: float = 0.05
    """Blocked share the new adapter may exceed the current one's by."""
    gate_perplexity_margin: float = 0.02
    """Relative perplexity increase still accepted (sampling noise)."""
    gate_writing: Literal["reported", "required"] = "reported"
    """How well a classifier tells the sampled replies from the real messages (AUC, 0.5 =
    reads as chat) in the gate: `reported` (recorded beside the other checks) or `required`
    (an AUC above the current adapter's by more than the margin refuses the new one). On 32
    samples it strays by about 0.08 (docs/results.md): `required` wants
    gate_generations >= 128."""
    gate_writing_margin: float = 0.05
    """AUC the new adapter's replies may exceed the current one's by (sampling noise)."""
    nice: int = 15
    """CPU priority of the retrain process (0 normal, 19 lowest)."""
    train_threads: int = 1
    """CPU threads the retrain may use (leave the rest to the live bot)."""


class WebSettings(_Group):
    """The streamer's control room: OBS overlay and dashboard served by the bot (chatling/web)."""

    enabled: bool = False
    """Serve /overlay and /dashboard from `chatling run` and `chatling replay`."""
    host: str = "127.0.0.1"
    """Address to listen on; keep 127.0.0.1 unless a reverse proxy adds TLS in front."""
    port: int = Field(default=8787, ge=0, le=65535)
    """Port to listen on (`chatling web url` prints the links)."""
    token_file: str = "data/web-token"
    """The access token of the pages, made on first start (mode 0600, beside the Twitch tokens)."""
    overlay_css: str = "prompts/overlay.css"
    """The overlay's look: one CSS file, read on every page load (edit it, reload OBS)."""
    overlay_fade_s: float = Field(default=15.0, gt=0)
    """Seconds a reply stays on the overlay before it fades out."""
    overlay_max_lines: int = Field(default=4, ge=1)
    """Replies shown on the overlay at once (newest at the bottom)."""
    overlay_speech: bool = False
    """Also show the streamer's last transcribed line on the overlay."""
    feed_size: int = Field(default=50, ge=1)
    """Replies the dashboard keeps (and may mark) since the bot started."""


class Settings(BaseSettings):
    """All settings of one chatling process."""

    model_config = SettingsConfigDict(
        env_prefix="CHATLING_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
        use_attribute_docstrings=True,
    )

    twitch: TwitchSettings = Field(default_factory=TwitchSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    reply: ReplySettings = Field(default_factory=ReplySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    log_level: str = "INFO"
    """Logging level: DEBUG, INFO, WARNING."""


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings once; turn every problem with them into one clear ``ConfigError``."""
    source = f" (from {env_file} and the environment)" if env_file else ""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings{source}: {problems}") from None
    except UnicodeDecodeError as exc:
        raw = Path(env_file).read_bytes() if env_file else b""
        try:
            raw.decode("utf-8")
            at = exc.start
        except UnicodeDecodeError as again:
            at = again.start
        line = raw[:at].count(b"\n") + 1
        raise ConfigError(
            f"{env_file} (line {line}, byte {at}): not UTF-8 text; save the settings file as UTF-8"
        ) from None
    except SettingsError as exc:
        # A JSON value (a list, or a whole group) that does not parse.
        field = re.search(r'field "(\w+)"', str(exc))
        where = _bad_json_value(env_file, field.group(1)) if field else None
        raise ConfigError(
            f"invalid settings{source}: {where or exc}: not valid JSON; write lists as "
            '["a", "b"] and groups as {"key": value}'
        ) from None


def _bad_json_value(env_file: str | Path | None, field: str) -> str | None:
    """``KEY (file line N)`` of the first value of ``field`` that is not valid JSON."""
    prefix = f"CHATLING_{field.upper()}"
    found: list[tuple[str, str, str]] = [
        (key, value, "the environment")
        for key, value in os.environ.items()
        if key.upper().startswith(prefix)
    ]
    if env_file and Path(env_file).is_file():
        lines = Path(env_file).read_text("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            key, sep, value = line.strip().removeprefix("export ").partition("=")
            value = value.strip().strip("'\"")
            if sep and key.strip().upper().startswith(prefix):
                found.append((key.strip(), value, f"{env_file} line {number}"))
    for key, value, where in found:
        if value[:1] not in "[{" and "__" in key.upper().removeprefix("CHATLING_"):
            continue  # a plain value of a nested key: not parsed as JSON
        try:
            json.loads(value)
        except ValueError:
            return f"{key} ({where})"
    return None


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret shown as ``**********``."""
    return settings.model_dump(mode="json")


def env_example() -> str:
    """The text of ``.env.example``: every key, its default and a one-line comment."""
    lines = [
        "# chatling settings: copy to .env and fill in what you use.",
        "# Every key is optional; shown with its default. Environment variables override .env.",
        "",
        f"# {Settings.model_fields['log_level'].description}",
        "CHATLING_LOG_LEVEL=INFO",
    ]
    for group_name, group_field in Settings.model_fields.items():
        group = group_field.default_factory
        if group is None:
            continue
        model = group()  # type: ignore[call-arg]
        lines += ["", f"# --- {group_name}: {type(model).__doc__} ---"]
        for key, info in type(model).model_fields.items():
            value = getattr(model, key)
            if isinstance(value, SecretStr):
                value = ""
            elif isinstance(value, list):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            elif value is None:
                value = ""
            # A description over several lines stays a comment on every line.
            lines += [f"# {line}" for line in (info.description or "").splitlines()]
            lines.append(f"CHATLING_{group_name.upper()}__{key.upper()}={value}")
    return "\n".join(lines) + "\n"
