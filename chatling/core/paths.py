"""Where the project's files are, and the one rule for a relative path in settings."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout (an editable install): ``data/``, ``prompts/`` and the models live here."""
DEFAULT_MODEL_DIR = PROJECT_ROOT / "data" / "models" / "smollm2-135m-instruct"
DEFAULT_WHISPER_DIR = PROJECT_ROOT / "data" / "models" / "whisper-base-ct2"


def resolve_path(path: str | Path) -> Path:
    """A path from settings: absolute as given; relative to the working directory if
    it exists there, else to the project root (so the defaults work from anywhere)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p
