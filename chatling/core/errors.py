"""The one exception tree of chatling.

Every error a user can cause (bad settings, a broken chat log, a corrupt audio
file, a missing model) is a ``ChatlingError`` whose message says what went
wrong, where, and what to do. The CLI prints these as one line, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class ChatlingError(Exception):
    """Base class: a problem the user can act on."""


class ConfigError(ChatlingError):
    """Settings are missing or invalid."""


class InputFileError(ChatlingError):
    """A file the user gave us cannot be read.

    Carries the file and the place in it (line, index or byte offset) so the
    message always names both.
    """

    def __init__(self, path: str | Path, where: str | None, problem: str) -> None:
        self.path = Path(path)
        self.where = where
        self.problem = problem
        location = f"{self.path}" + (f" ({where})" if where else "")
        super().__init__(f"{location}: {problem}")


class ChatLogError(InputFileError):
    """A chat log is truncated, of an unknown format or has bad records."""


class AudioError(InputFileError):
    """An audio or video file cannot be decoded."""


class ModelError(ChatlingError):
    """A model or adapter path is missing or cannot be loaded."""


class StoreError(ChatlingError):
    """The SQLite store cannot be opened or written (disk full, corrupt file)."""


class EngineError(ChatlingError):
    """The engine failed one generation (its process died or refused the request)."""


class TwitchError(ChatlingError):
    """Twitch refused us (bad/revoked token, missing permission, unknown channel)."""


class TwitchAuthError(TwitchError):
    """Twitch rejects the bot's token and refuses to refresh it: re-authorise the bot."""


class AudioDeviceError(ChatlingError):
    """No audio server answers, or the named audio device does not exist."""
