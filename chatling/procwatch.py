"""The engine's processes die with the bot, however the bot dies.

vLLM runs the model in other processes: the bot starts ``EngineCore``, which
starts one ``Worker`` per rank (on the CPU build both with multiprocessing
``spawn``, which the CPU platform forces; on CUDA ``fork`` by default). When
the bot exits normally ``AsyncLLM.shutdown`` stops them; when it is killed
(``kill -9``, the OOM killer) nothing does: ``EngineCore`` talks to the bot
over ZeroMQ, which never notices a dead peer, so ``EngineCore`` (~800 MiB)
and its ``Worker`` (~3.3 GiB) lived on for as long as anyone watched, and a
supervisor that restarts the bot would stack them until memory runs out.

How: before building the engine the bot puts its pid and start time in the
environment (``CHATLING_ENGINE_OWNER``, :func:`mark_owner`); every process
vLLM creates inherits it. vLLM calls its ``vllm.general_plugins`` entry points
in *every* process it creates, EngineCore and workers alike, before the
model loads, whatever the start method (fork or spawn) and at any depth;
chatling registers :func:`register` there (``pyproject.toml``). In a process
that is not the owner it opens a pidfd on the owner and waits on it in a
thread; when the owner exits the pidfd becomes readable and the process
kills its own descendants and itself with SIGKILL. Each engine process
watches the bot directly, so a grandchild does not depend on its parent
noticing first.

Why not the alternatives:

- ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits,
  not the process (the engine is rebuilt from a thread-pool thread after a
  crash), and it has to be set in the child between fork and exec: with
  ``spawn`` multiprocessing gives no hook there, and it reaches only one
  level (a Worker would watch EngineCore, not the bot).
- A process group or session: ``kill -9`` of the bot signals only the bot,
  and a supervisor killing the group would also hit whatever shares it
  (the shell's pipeline, pytest); a new session loses Ctrl-C.
- ``PR_SET_CHILD_SUBREAPER`` makes orphans of the bot's *descendants* come
  back to the bot while it lives; once the bot is dead there is nobody left
  to reap or kill them.
- Injecting the watch with ``sitecustomize`` or a ``.pth`` file would run it
  in every Python process of the venv; a plugin entry point runs only in
  vLLM's processes and is vLLM's documented extension point.

A pidfd names one process, so a recycled pid cannot fool the watch once it
is open; the start time in the variable catches a pid recycled before it
opened. multiprocessing's resource tracker, the one other process in the
tree, exits by itself once every holder of its pipe is gone.

Limits: if the bot is killed in EngineCore's first second, before vLLM loads
plugins there (its handshake with the bot), EngineCore is not watched; it
gives up on the handshake by itself after 5 minutes, with no model loaded.
The entry point must be visible to ``importlib.metadata``: ``mark_owner``
logs a warning when it is not (a stale ``chatling.egg-info`` in the
repository root, which comes first on ``sys.path`` for ``python -m chatling``,
hides the installed one). Without ``pidfd_open`` (Linux < 5.3) the watch
checks the owner once a second instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
from collections.abc import Callable

OWNER_ENV = "CHATLING_ENGINE_OWNER"
"""``<pid>:<start time in clock ticks>`` of the process that owns the engine."""
PLUGIN_GROUP = "vllm.general_plugins"
PLUGIN_NAME = "chatling_procwatch"

log = logging.getLogger(__name__)
# In vLLM's processes only vLLM's logger has a handler (the bot's root logger
# is not configured there), so the child side logs under it.
_child_log = logging.getLogger("vllm.chatling_procwatch")


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot); ``None`` if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (the command) may hold spaces and parentheses: split after its last ")".
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def mark_owner() -> None:
    """Make this process the owner that engine processes started from now on die with."""
    pid = os.getpid()
    os.environ[OWNER_ENV] = f"{pid}:{start_ticks(pid)}"
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and PLUGIN_NAME not in allowed.split(","):
        os.environ["VLLM_PLUGINS"] = ",".join(p for p in (allowed, PLUGIN_NAME) if p)
    from importlib.metadata import entry_points

    if not any(ep.name == PLUGIN_NAME for ep in entry_points(group=PLUGIN_GROUP)):
        log.warning(
            "chatling is not installed with its vLLM plugin entry point, so the engine's "
            "processes will outlive a killed bot; run `pip install -e .` (make setup) again"
        )


def register() -> None:
    """vLLM plugin entry point: in an engine process, die when the owner dies.

    Called by vLLM in each of its processes (and in the bot itself, where it
    does nothing); safe to call more than once.
    """
    value = os.environ.get(OWNER_ENV)
    if not value:
        return  # vLLM run by something other than chatling
    pid_text, _, ticks_text = value.partition(":")
    try:
        pid, ticks = int(pid_text), int(ticks_text)
    except ValueError:
        _child_log.warning("ignoring malformed %s=%r", OWNER_ENV, value)
        return
    if pid != os.getpid():
        watch_owner(pid, ticks, _die)


def watch_owner(pid: int, ticks: int, on_exit: Callable[[int], None]) -> threading.Thread | None:
    """Call ``on_exit(pid)`` once the process ``pid`` started at ``ticks`` has exited.

    If it is already gone, ``on_exit`` runs now and no thread is started;
    otherwise a daemon thread waits for it (daemon: a vLLM process must be
    able to exit normally while the owner still lives).
    """
    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        on_exit(pid)
        return None
    except (AttributeError, OSError):  # no pidfd_open (old kernel, not Linux)
        fd = None
    if start_ticks(pid) != ticks:  # gone, or its pid already reused
        if fd is not None:
            os.close(fd)
        on_exit(pid)
        return None
    thread = threading.Thread(
        target=_wait_for_exit,
        args=(pid, ticks, fd, on_exit),
        name=f"chatling-owner-{pid}",
        daemon=True,
    )
    thread.start()
    return thread


def _wait_for_exit(pid: int, ticks: int, fd: int | None, on_exit: Callable[[int], None]) -> None:
    if fd is None:
        stop = threading.Event()
        while start_ticks(pid) == ticks:
            stop.wait(1.0)  # no pidfd to wait on: check once a second
    else:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll()  # blocks until the owner exits (signals are retried, PEP 475)
        os.close(fd)
    on_exit(pid)


def _die(owner: int) -> None:
    """SIGKILL this process's descendants, then this process: its owner is gone."""
    import psutil

    me = psutil.Process()
    _child_log.warning(
        "chatling process %d that owned this engine process (%d) is gone; exiting",
        owner,
        me.pid,
    )
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os.kill(me.pid, signal.SIGKILL)


def process_token(pid: int | None = None) -> str:
    """``<host>:<pid>:<start ticks>``: names one process on one machine, across pid reuse."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid)}"


def token_alive(token: str) -> bool | None:
    """Whether the process a ``process_token`` names still runs; ``None``: cannot tell.

    ``None`` for another machine's process (a database on a shared disk) or a
    token this code did not write.
    """
    parts = token.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, ticks = parts
    if host != socket.gethostname() or ticks == "None":  # no /proc: no start times
        return None
    return str(start_ticks(int(pid))) == ticks
