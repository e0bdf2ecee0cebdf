"""Settings, read once at start from the environment and ``.env``.

Keys are grouped (``CHATLING_MODEL__NAME``, ``CHATLING_REPLY__BOT_NAME``...);
every token is a ``SecretStr`` so it is masked in reprs, logs and
``chatling config check``. Modules receive the group they need, never the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "data" / "models" / "smollm2-135m-instruct"
DEFAULT_WHISPER_DIR = PROJECT_ROOT / "data" / "models" / "whisper-base-ct2"


class TwitchSettings(BaseModel):
    """The bot account and the channel it chats in."""

    channel: str = ""
    bot_login: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    bot_token: SecretStr = SecretStr("")
    refresh_token: SecretStr = SecretStr("")
    is_moderator: bool = False
    known_bots: list[str] = Field(
        default_factory=lambda: ["nightbot", "streamelements", "moobot", "fossabot", "streamlabs"]
    )
    command_prefix: str = "!chatling"


class DiscordSettings(BaseModel):
    """The Discord application that answers ``/chat``."""

    token: SecretStr = SecretStr("")
    guild_id: int | None = None
    cooldown_s: float = 10.0


class AudioSettings(BaseModel):
    """Where stream audio comes from and how it is transcribed."""

    device: str | None = None
    whisper_model: str = str(DEFAULT_WHISPER_DIR)
    language: str | None = "en"
    beam_size: int = 1
    compute_type: str = "int8"
    cpu_threads: int = 0
    chunk_s: float = 1.0
    """How much audio the streaming transcriber takes per step."""
    max_utterance_s: float = 12.0
    """An utterance this long is committed even without a pause."""
    silence_commit_s: float = 0.5
    """A pause this long after speech commits the utterance."""


class ModelSettings(BaseModel):
    """The language model served in-process by vLLM."""

    name: str = str(DEFAULT_MODEL_DIR)
    """A local directory or a Hugging Face id (for users with internet)."""
    adapter: str | None = None
    """Path of a LoRA adapter to load at start."""
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    max_lora_rank: int = 16
    dtype: str = "bfloat16"
    cpu_kvcache_gib: int = 2
    seed: int = 0


class ReplySettings(BaseModel):
    """When and how the bot speaks."""

    bot_name: str = "chatling"
    persona_file: str = "prompts/persona.txt"
    template_file: str = "prompts/reply.txt"
    blocked_terms_file: str = "prompts/blocked_terms.txt"
    extra_blocked_terms: list[str] = Field(default_factory=list)
    transcript_window_s: float = 60.0
    max_chat_messages: int = 20
    prompt_token_budget: int = 768
    candidates: int = 4
    max_tokens: int = 32
    temperature: float = 0.9
    top_p: float = 0.95
    burst_messages: int = 12
    """This many chat messages within ``burst_window_s`` count as a burst."""
    burst_window_s: float = 10.0
    quiet_interval_s: float = 45.0
    quiet_jitter_s: float = 15.0
    global_cooldown_s: float = 15.0
    user_cooldown_s: float = 30.0
    rate_messages: int = 12
    """Messages allowed per ``rate_window_s``: well under Twitch's 20 / 30 s."""
    rate_window_s: float = 30.0
    moderator_rate_messages: int = 80
    """Used instead when the bot is a moderator: under Twitch's 100 / 30 s."""
    max_chars: int = 500
    duplicate_window_s: float = 300.0


class StorageSettings(BaseModel):
    """Where the SQLite log lives and how often it is flushed."""

    db_path: str = "data/chatling.sqlite"
    flush_interval_s: float = 0.5
    max_batch: int = 500


class ScheduleSettings(BaseModel):
    """The nightly retrain."""

    enabled: bool = False
    cron: str = "0 4 * * *"
    timezone: str = "UTC"
    only_when_offline: bool = True


class Settings(BaseSettings):
    """All settings of one chatling process."""

    model_config = SettingsConfigDict(
        env_prefix="CHATLING_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    twitch: TwitchSettings = Field(default_factory=TwitchSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    reply: ReplySettings = Field(default_factory=ReplySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    log_level: str = "INFO"


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read settings once; turn validation errors into one clear ``ConfigError``."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        source = f" (from {env_file} and the environment)" if env_file else ""
        raise ConfigError(f"invalid settings{source}: {problems}") from None


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret shown as ``**********``."""
    return settings.model_dump(mode="json")
