"""The streamer's control room: an OBS overlay and a dashboard served by the bot.

``WebServer`` (``server.py``) runs on the bot's event loop when
``CHATLING_WEB__ENABLED`` is set; ``EventHub``/``ObservedDisplay`` (``hub.py``)
carry the pipeline's events to the pages; ``routes.py`` holds the pages and
the JSON API; ``token.py`` the access token; ``static/`` the pages' files.
The overlay's look is ``prompts/overlay.css`` (``WebSettings.overlay_css``).
"""

from chatling.web.routes import BotHandle
from chatling.web.server import (
    WebServer,
    bot_handle,
    page_urls,
    token_path,
    url_lines,
    web_server,
)
from chatling.web.token import load_or_create_token

__all__ = [
    "BotHandle",
    "WebServer",
    "bot_handle",
    "load_or_create_token",
    "page_urls",
    "token_path",
    "url_lines",
    "web_server",
]
