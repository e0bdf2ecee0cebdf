"""Which LoRA adapter the bot serves: versioned directories and one pointer file.

Layout under ``ScheduleSettings.adapters_dir`` (default ``data/adapters``)::

    versions/v0001/   adapter_config.json, adapter_model.safetensors, chatling_adapter.json
    versions/v0002/   ...
    active.json       {"version": "v0002", "history": ["v0001", "v0002"], "updated_at": ...}

A version directory is complete before it gets its name (written under a
temporary name and renamed), and is never changed afterwards. The pointer
``active.json`` is the single source of truth for what serves: it is replaced
atomically (``os.replace`` of a fsynced temporary file), so a crash at any
moment leaves either the old or the new pointer, never half of one. Writers
(the nightly job in its own process, ``chatling adapters promote|rollback``)
take an exclusive ``flock`` on ``.lock`` so two of them cannot interleave.

The running bot never reads versions itself: ``chatling.learn.watcher`` polls the
pointer and asks the engine to load what it names, which is how a promotion or
a rollback from another process reaches the live engine without a restart.
``history`` is the list of versions that were active, oldest first; rollback
drops the last one and activates the one before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatling.core.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

POINTER_FILE = "active.json"
VERSIONS_DIR = "versions"
LOCK_FILE = ".lock"
METADATA_FILE = "chatling_adapter.json"
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    """One stored adapter and what its metadata says about it."""

    name: str
    path: Path
    created_at: float
    metadata: dict[str, Any]
    active: bool = False

    @property
    def summary(self) -> str:
        """One line for listings: how it was made."""
        meta = self.metadata
        parts = []
        if meta.get("preset", {}).get("name"):
            parts.append(f"preset {meta['preset']['name']}")
        if meta.get("dataset", {}).get("pairs") is not None:
            parts.append(f"{meta['dataset']['pairs']} pairs")
        if meta.get("dpo"):
            parts.append(f"+DPO on {meta['dpo'].get('pairs', '?')} marks")
        if meta.get("nightly", {}).get("run") is not None:
            parts.append(f"run {meta['nightly']['run']}")
        return ", ".join(parts) or "no metadata"


@dataclass(frozen=True, slots=True)
class Pointer:
    """The content of ``active.json``."""

    version: str | None
    history: tuple[str, ...] = ()
    updated_at: float = 0.0


def check_adapter_dir(path: Path) -> None:
    """Raise ``ModelError`` unless ``path`` holds a complete LoRA adapter."""
    if not path.is_dir():
        raise ModelError(f"{path}: no such adapter directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelError(f"{path}: not a complete adapter (missing {', '.join(missing)})")
    try:
        json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'adapter_config.json'}: unreadable ({exc})") from None
    weights = path / "adapter_model.safetensors"
    try:
        with weights.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= min(100 * 2**20, weights.stat().st_size - 8):
                raise ValueError(f"header length {size} does not fit the file")
            json.loads(f.read(size))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{weights}: corrupt safetensors header ({exc})") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``path`` so that readers see the old content or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class AdapterRegistry:
    """The versioned adapters of one bot and the pointer to the active one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS_DIR
        self.pointer_path = self.root / POINTER_FILE

    # -- reading ---------------------------------------------------------------

    def pointer(self) -> Pointer:
        """The pointer as stored (no active version when there is no file yet)."""
        try:
            raw = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Pointer(None)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{self.pointer_path}: unreadable adapter pointer ({exc}); "
                "fix it or run `chatling adapters promote VERSION`"
            ) from None
        version = raw.get("version")
        return Pointer(
            str(version) if version else None,
            tuple(str(v) for v in raw.get("history", ())),
            float(raw.get("updated_at", 0.0)),
        )

    def path_of(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise ConfigError(f"{version!r} is not an adapter version (like v0003)")
        return self.versions_dir / version

    def active(self) -> AdapterVersion | None:
        """The version the pointer names (``None``: serve the base model)."""
        pointer = self.pointer()
        if pointer.version is None:
            return None
        return self._version(pointer.version, active=True)

    def versions(self) -> list[AdapterVersion]:
        """Every complete stored version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        active = self.pointer().version
        names = sorted(
            (p.name for p in self.versions_dir.iterdir() if _VERSION.match(p.name)),
            key=lambda n: int(n[1:]),
        )
        return [self._version(n, active=n == active) for n in names]

    def _version(self, name: str, *, active: bool) -> AdapterVersion:
        path = self.path_of(name)
        meta_path = path / METADATA_FILE
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metadata = {}
        try:
            created = path.stat().st_mtime
        except OSError:
            created = 0.0
        return AdapterVersion(name, path, created, metadata, active)

    # -- writing ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes: one writer of versions and pointer at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, source: Path) -> AdapterVersion:
        """Copy a finished adapter directory in as the next version (not activated)."""
        check_adapter_dir(source)
        with self.locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            numbers = [
                int(m.group(1))
                for p in self.versions_dir.iterdir()
                if (m := _VERSION.match(p.name))
            ]
            name = f"v{max(numbers, default=0) + 1:04d}"
            staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=f".{name}."))
            try:
                for item in source.iterdir():
                    if item.is_file():
                        shutil.copy2(item, staging / item.name)
                        with (staging / item.name).open("rb") as f:
                            os.fsync(f.fileno())
                os.rename(staging, self.versions_dir / name)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(self.versions_dir)
        log.info("stored adapter %s from %s", name, source)
        return self._version(name, active=False)

    def promote(self, version: str) -> Pointer:
        """Make ``version`` the active adapter (checked complete first)."""
        check_adapter_dir(self.path_of(version))
        with self.locked():
            current = self.pointer()
            history = [v for v in current.history if v != version] + [version]
            pointer = Pointer(version, tuple(history), time.time())
            self._write(pointer)
        log.info("adapter %s is now active (was %s)", version, current.version or "base model")
        return pointer

    def rollback(self) -> Pointer:
        """Go back to the adapter that was active before this one (or the base model)."""
        with self.locked():
            current = self.pointer()
            if current.version is None:
                raise ConfigError("no active adapter to roll back from; the base model serves")
            history = list(current.history)
            if history and history[-1] == current.version:
                history.pop()
            previous = history[-1] if history else None
            if previous is not None:
                check_adapter_dir(self.path_of(previous))
            pointer = Pointer(previous, tuple(history), time.time())
            self._write(pointer)
        log.info("rolled back from %s to %s", current.version, previous or "the base model")
        return pointer

    def _write(self, pointer: Pointer) -> None:
        write_json_atomic(
            self.pointer_path,
            {
                "version": pointer.version,
                "history": list(pointer.history),
                "updated_at": pointer.updated_at,
            },
        )


__all__ = [
    "AdapterRegistry",
    "AdapterVersion",
    "Pointer",
    "check_adapter_dir",
    "write_json_atomic",
]
