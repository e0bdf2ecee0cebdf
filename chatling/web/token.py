"""The access token of the web pages: random, made on first start, stored 0600.

The pages and the API drive the bot (pause it, promote adapters), so every
request needs this token, even on 127.0.0.1 (any local program or web page
could otherwise reach the port). It lives in a file beside the Twitch tokens
(``WebSettings.token_file``), written atomically with mode 0600 from the
start, and is read back as a ``SecretStr`` so it never lands in a log.
Delete the file to revoke every link; the next start makes a new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from pydantic import SecretStr

from chatling.core.errors import ConfigError

TOKEN_BYTES = 32


def load_or_create_token(path: Path) -> SecretStr:
    """The token stored in ``path``; a new random one (written 0600) when there is none."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the web token ({exc.strerror})") from None
    if len(text) < 16:
        raise ConfigError(
            f"{path}: the web token is too short or empty; delete the file to get a new one"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Someone loosened it: tighten, as ssh does for keys (we own the file).
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
    return SecretStr(text)


def _create(path: Path) -> SecretStr:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the web token ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        # Never replace a token another process wrote meanwhile: link, not rename.
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_or_create_token(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return SecretStr(token)
