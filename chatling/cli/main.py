"""The ``chatling`` command line.

    chatling replay [--audio FILE --chat FILE] [--speed N]   replay a recorded stream
    chatling config check [--env-file .env]                  show the effective settings
    chatling models provision                                set up the packaged models
    chatling models merge --adapter DIR --out DIR            fold an adapter into its base

Errors the user can fix are printed as one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatling.cli.common import setup_logging
from chatling.core.errors import ChatlingError

log = logging.getLogger("chatling")


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _cmd_replay(args: argparse.Namespace) -> int:
    from chatling.app import ReplayRequest, replay
    from chatling.core.settings import load_settings
    from chatling.display import Display, SummaryRow

    overrides: dict[str, object] = {}
    settings = load_settings(args.env_file)
    if args.db:
        settings.storage.db_path = args.db
    if args.model:
        settings.model.name = args.model
    if args.adapter:
        settings.model.adapter = args.adapter
    if args.eager:
        settings.model.enforce_eager = True
    del overrides
    setup_logging(args.verbose, settings.log_level)
    request = ReplayRequest(
        audio=Path(args.audio), chat=Path(args.chat), speed=args.speed, until_s=args.until
    )
    display = Display(show_chat=not args.no_chat, quiet=args.quiet)
    result = asyncio.run(replay(settings, request, display))
    st = result.stats
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    rows = [
        SummaryRow("stream replayed", f"{result.stream_seconds:.0f} s at {args.speed:g}x"),
        SummaryRow("speech utterances", str(st.utterances_in)),
        SummaryRow("chat messages", str(st.chat_in)),
        SummaryRow("replies posted", str(st.posted)),
        SummaryRow("held back: blocked by filter", str(st.blocked)),
        SummaryRow("held back: rate-limited", str(st.rate_limited)),
        SummaryRow("failed", str(st.failed + st.store_unhealthy)),
        SummaryRow(
            "reply latency p50 / p95",
            f"{ms(_percentile(st.latencies_s, 50))} / {ms(_percentile(st.latencies_s, 95))}",
        ),
        SummaryRow("first token p50", ms(_percentile(st.first_token_s, 50))),
        SummaryRow(
            "end of speech → reply p50 (stream s)", f"{_percentile(st.speech_to_reply_s, 50):.1f} s"
        ),
        SummaryRow(
            "transcription lag p50 (stream s)", f"{_percentile(st.transcription_lag_s, 50):.1f} s"
        ),
        SummaryRow("SQLite log", f"{result.db_path} (stream {result.stream_id})"),
    ]
    title = "replay interrupted" if result.interrupted else "replay finished"
    display.summary(title, rows)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings
    from chatling.display import Display
    from chatling.live import run_live

    settings = load_settings(args.env_file)
    setup_logging(args.verbose, settings.log_level)
    result = asyncio.run(
        run_live(
            settings,
            run_for_s=args.run_for,
            display=Display(show_chat=not args.no_chat),
            env_file=args.env_file,
        )
    )
    st = result.stats
    log.info(
        "stopped: %d chat messages, %d utterances, %d replies posted, %d blocked, "
        "%d rate-limited; log in %s (stream %d)",
        st.chat_in,
        st.utterances_in,
        st.posted,
        st.blocked,
        st.rate_limited,
        result.db_path,
        result.stream_id,
    )
    return 0


def _cmd_auth_twitch(args: argparse.Namespace) -> int:
    from chatling.core.paths import resolve_path
    from chatling.core.settings import load_settings
    from chatling.platforms.twitch.auth import device_code_login

    settings = load_settings(args.env_file)
    setup_logging(False, settings.log_level)
    if not settings.twitch.client_id:
        from chatling.core.errors import ConfigError

        raise ConfigError(
            "set CHATLING_TWITCH__CLIENT_ID to your Twitch application's client id "
            "(dev.twitch.tv/console), then run `chatling auth twitch` again"
        )
    token_file = resolve_path(settings.twitch.token_file)
    asyncio.run(
        device_code_login(
            settings.twitch.client_id, token_file=token_file, channel=settings.twitch.channel
        )
    )
    print(f"tokens saved to {token_file} (mode 0600)")
    return 0


def _cmd_audio_devices(args: argparse.Namespace) -> int:
    from chatling.sources.loopback import device_lines, list_devices

    for line in device_lines(list_devices()):
        print(line)
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings, masked_settings

    settings = load_settings(args.env_file)
    print(json.dumps(masked_settings(settings), indent=2))
    return 0


def _cmd_safety_check(args: argparse.Namespace) -> int:
    from chatling.cli.safety import run_check
    from chatling.core.settings import load_settings

    run_check(load_settings(args.env_file), args.file, sys.stdout)
    return 0


def _cmd_web_url(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings
    from chatling.web import url_lines

    for line in url_lines(load_settings(args.env_file)):
        print(line)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from chatling.models import provision_all

    setup_logging()
    llm, whisper = provision_all()
    print(f"language model: {llm}\nwhisper model:  {whisper}")
    return 0


def _cmd_models_merge(args: argparse.Namespace) -> int:
    from chatling.core.paths import DEFAULT_MODEL_DIR
    from chatling.models import merge_adapter

    setup_logging()
    base = Path(args.base) if args.base else DEFAULT_MODEL_DIR
    out = merge_adapter(base, Path(args.adapter), Path(args.out))
    print(f"merged model: {out}\nserve it with CHATLING_MODEL__NAME={out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatling",
        description="A bot that chats live like a streamer's own Twitch chat.",
    )
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    sub = parser.add_subparsers(dest="command", required=True)
    from chatling.cli.contrast import add_contrast_command
    from chatling.cli.data import add_data_commands
    from chatling.cli.eval import add_eval_command
    from chatling.cli.generate import add_generate_command
    from chatling.cli.nightly import add_nightly_commands
    from chatling.cli.train import add_train_command
    from chatling.serve import add_serve_command

    add_data_commands(sub)
    add_train_command(sub)
    add_contrast_command(sub)
    add_eval_command(sub)
    add_generate_command(sub)
    add_nightly_commands(sub)
    add_serve_command(sub)

    _add_replay_command(sub)
    _add_run_command(sub)
    _add_tool_commands(sub)
    return parser


def _add_replay_command(sub: Any) -> None:
    from chatling.app import DEMO_AUDIO, DEMO_CHAT

    rp = sub.add_parser(
        "replay",
        help="replay a recorded stream (audio/video + chat log) through the whole pipeline",
        description="Replays a recorded stream in real time (or --speed N): transcribes the "
        "audio, feeds the chat log, and shows what the bot would reply, with a summary and "
        "a SQLite log at the end. Without arguments it replays the project's demo stream.",
    )
    rp.add_argument(
        "--audio", default=str(DEMO_AUDIO), help="audio or video file (any FFmpeg format)"
    )
    rp.add_argument(
        "--chat",
        default=str(DEMO_CHAT),
        help="chat log (TwitchDownloader JSON, Twitch v5 JSON, chat-downloader JSON/JSONL)",
    )
    rp.add_argument("--speed", type=float, default=1.0, help="replay speed (default 1 = real time)")
    rp.add_argument(
        "--until",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds of stream",
    )
    rp.add_argument("--db", default=None, help="SQLite log (default: storage.db_path)")
    rp.add_argument("--model", default=None, help="model directory or Hugging Face id")
    rp.add_argument("--adapter", default=None, help="LoRA adapter directory")
    rp.add_argument("--eager", action="store_true", help="skip torch.compile (faster start)")
    rp.add_argument("--no-chat", action="store_true", help="do not print viewers' chat lines")
    rp.add_argument("--quiet", action="store_true", help="print only the bot and the summary")
    rp.add_argument("-v", "--verbose", action="store_true", help="debug logging (vLLM too)")
    rp.set_defaults(func=_cmd_replay)


def _add_run_command(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="chat live: Twitch chat, Discord /chat and loopback audio, as configured",
        description="Runs the bot live with whichever of Twitch, Discord and loopback audio "
        "are configured in .env (see .env.example). Ctrl-C stops it cleanly.",
    )
    run.add_argument(
        "--run-for",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    run.add_argument("--no-chat", action="store_true", help="do not print viewers' chat lines")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_cmd_run)


def _add_tool_commands(sub: Any) -> None:
    """auth, audio, config, safety, web, models: the small commands around a run."""
    auth = sub.add_parser("auth", help="authorise accounts")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True)
    tw = auth_sub.add_parser(
        "twitch",
        help="authorise the bot's Twitch account (device-code flow)",
        description="Signs the bot account in with Twitch's device-code flow, asking for "
        "user:read:chat user:write:chat user:bot, and saves the tokens to "
        "twitch.token_file (mode 0600). It also tells you how the broadcaster grants "
        "channel:bot or makes the bot a moderator.",
    )
    tw.set_defaults(func=_cmd_auth_twitch)

    audio = sub.add_parser("audio", help="audio devices")
    audio_sub = audio.add_subparsers(dest="audio_command", required=True)
    dev = audio_sub.add_parser("devices", help="list devices whose output can be recorded")
    dev.set_defaults(func=_cmd_audio_devices)

    cfg = sub.add_parser("config", help="inspect settings")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="print the effective settings, secrets masked")
    check.set_defaults(func=_cmd_config_check)

    safety = sub.add_parser("safety", help="try the safety filter")
    safety_sub = safety.add_subparsers(dest="safety_command", required=True)
    scheck = safety_sub.add_parser(
        "check",
        help="one JSON verdict per input line (plain text, or JSONL with text/target/recent)",
    )
    scheck.add_argument("file", nargs="?", default="-", help="input file, or - for stdin")
    scheck.set_defaults(func=_cmd_safety_check)

    web = sub.add_parser("web", help="the overlay and dashboard (CHATLING_WEB__ENABLED)")
    web_sub = web.add_subparsers(dest="web_command", required=True)
    url = web_sub.add_parser(
        "url",
        help="print the overlay and dashboard links (with the token: keep them private)",
        description="Prints the links of the OBS overlay and the dashboard, which carry the "
        "access token (made on first use, stored 0600 in web.token_file). Delete that file "
        "to revoke every link.",
    )
    url.set_defaults(func=_cmd_web_url)

    models = sub.add_parser("models", help="manage the packaged models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    prov = models_sub.add_parser("provision", help="provision the packaged default models once")
    prov.set_defaults(func=_cmd_models)
    merge = models_sub.add_parser(
        "merge",
        help="fold a LoRA adapter into its base (serves at the plain model's speed on a CPU)",
        description="Writes BASE with ADAPTER merged in as a plain model directory. On a CPU, "
        "vLLM's LoRA path costs about 3x the plain model's generation time; a merged model "
        "costs nothing extra. Serve it with CHATLING_MODEL__NAME=OUT.",
    )
    merge.add_argument("--adapter", required=True, help="LoRA adapter directory")
    merge.add_argument("--out", required=True, help="new model directory (must not exist)")
    merge.add_argument("--base", help="base model directory (default: the packaged model)")
    merge.set_defaults(func=_cmd_models_merge)


def _find_chatling_error(exc: BaseException) -> ChatlingError | None:
    if isinstance(exc, ChatlingError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_chatling_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    # vLLM logs (its errors too) to stdout unless told otherwise, in this process and the
    # engine's; stdout is for what a command produces. Set before anything imports vLLM.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ChatlingError, BaseExceptionGroup) as exc:
        error = _find_chatling_error(exc)
        if error is None:
            raise
        print(f"chatling: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
