"""The control room's parts without the engine: token file, guard, event hub, `web url`.

Real parts: files on disk, the guard middleware in a real aiohttp server on
127.0.0.1 with a real client, the hub fed through the terminal ``Display``.
The browser tests against a real replay are in ``test_web_browser.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import stat

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from chatling.cli.main import main
from chatling.core.errors import ConfigError
from chatling.core.events import Candidate, Reply
from chatling.core.settings import WebSettings
from chatling.display import Display
from chatling.web import load_or_create_token, page_urls
from chatling.web.hub import QUEUE_SIZE, EventHub, ObservedDisplay
from chatling.web.server import COOKIE, make_guard

TOKEN = "t" * 43


def test_token_is_made_once_with_mode_0600(tmp_path) -> None:
    path = tmp_path / "sub" / "web-token"
    first = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.get_secret_value()) >= 40
    assert load_or_create_token(path).get_secret_value() == first.get_secret_value()
    assert first.get_secret_value() not in repr(first)
    path.chmod(0o644)
    load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    with pytest.raises(ConfigError, match=r"web-token.*delete the file"):
        load_or_create_token(path)


def test_web_url_prints_both_links_with_the_token(tmp_path, capsys) -> None:
    env = tmp_path / ".env"
    env.write_text(f"CHATLING_WEB__TOKEN_FILE={tmp_path / 'tok'}\nCHATLING_WEB__PORT=9911\n")
    assert main(["--env-file", str(env), "web", "url"]) == 0
    out = capsys.readouterr().out
    token = (tmp_path / "tok").read_text().strip()
    assert f"http://127.0.0.1:9911/overlay?token={token}" in out
    assert f"http://127.0.0.1:9911/dashboard?token={token}" in out
    assert "CHATLING_WEB__ENABLED" in out
    urls = page_urls(WebSettings(host="0.0.0.0", port=1), SecretStr(TOKEN))
    assert urls["overlay"] == f"http://127.0.0.1:1/overlay?token={TOKEN}"


async def _guarded_server() -> tuple[web.AppRunner, str, list[str]]:
    calls: list[str] = []

    async def page(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(text="page", content_type="text/html")

    async def action(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[make_guard(SecretStr(TOKEN))])
    app.router.add_get("/dashboard", page)
    app.router.add_get("/api/status", action)
    app.router.add_post("/api/pause", action)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", calls


async def test_guard_token_cookie_and_cross_site() -> None:
    runner, base, calls = await _guarded_server()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # unsafe=True: aiohttp's jar keeps no cookies of IP hosts otherwise.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(base + "/dashboard") as r:
                assert r.status == 401 and "chatling web url" in await r.text()
            async with http.get(base + "/api/status", headers={"X-Chatling-Token": "x"}) as r:
                assert r.status == 401 and "error" in await r.json()
            async with http.get(f"{base}/dashboard?token=wrong", allow_redirects=False) as r:
                assert r.status == 401
            # The link sets the cookie and redirects to the page without the token.
            async with http.get(f"{base}/dashboard?token={TOKEN}", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/dashboard"
                cookie = r.cookies[COOKIE]
                assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"]
            async with http.get(base + "/dashboard") as r:  # the cookie jar has it now
                assert r.status == 200 and "Content-Security-Policy" in r.headers
            assert calls == ["/dashboard"]
            for headers, status in (
                ({"Sec-Fetch-Site": "cross-site"}, 403),
                ({"Sec-Fetch-Site": "same-site"}, 403),
                ({"Origin": "http://evil.example"}, 403),
                ({"Origin": base, "Sec-Fetch-Site": "same-origin"}, 200),
            ):
                async with http.post(base + "/api/pause", json={}, headers=headers) as r:
                    assert r.status == status, headers
            async with http.post(base + "/api/pause", data="a=b", headers=bearer) as r:
                assert r.status == 415  # a form body, not JSON
            assert calls == ["/dashboard", "/api/pause"]
    finally:
        await runner.cleanup()


async def test_hub_sends_the_overlay_only_posted_text_and_drops_slow_pages() -> None:
    hub = EventHub(feed_size=3)
    display = ObservedDisplay(Display(file=io.StringIO()), hub)
    overlay = hub.subscribe(frozenset({"overlay"}))
    dashboard = hub.subscribe(frozenset({"dashboard"}))
    blocked = Reply(1.0, "quiet", "p", [Candidate("bad words", False, "blocked_term", 0.5)])
    blocked.status = "blocked"
    posted = Reply(
        2.0,
        "addressed",
        "p",
        [Candidate("nope nope", False, "blocked_term", 0.9), Candidate("hi KEKW", True, "ok", 0.1)],
        chosen="hi KEKW",
        status="posted",
        reply_to_user="fan1",
        adapter="/somewhere/adapters/versions/v0002",
    )
    display.reply(blocked)
    display.reply(posted)
    said = overlay.queue.get_nowait()
    assert said is not None and said.name == "say"
    assert json.loads(said.data) == {"id": 2, "text": "hi KEKW", "to": "fan1"}
    assert overlay.queue.empty(), "the blocked reply reached the overlay"
    views = [json.loads(e.data) for e in (dashboard.queue.get_nowait() for _ in range(2)) if e]
    assert [v["status"] for v in views] == ["blocked", "posted"]
    assert views[1]["adapter"] == "v0002"  # a name, never the path
    for _ in range(3):
        display.reply(posted)
    assert [r["id"] for r in hub.feed] == [3, 4, 5]
    # A page that stops reading is dropped, not buffered without end.
    for _ in range(QUEUE_SIZE + 1):
        hub.publish("overlay", "say", {"text": "x"})
    assert overlay.dropped and hub.counts() == {"overlay": 0, "dashboard": 1}
    await asyncio.sleep(0)
