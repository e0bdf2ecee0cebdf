"""Events of the running bot, fanned out to the open pages (server-sent events).

``ObservedDisplay`` sits where the pipeline already reports what happens
(``PipelineParts.display``): it passes every call on to the terminal display
and hands a copy to the ``EventHub``, so the reply loop is not changed to feed
the pages. The hub keeps the last replies (the dashboard's feed, and what a
mark may name) and one bounded queue per connected page. A page that does
not keep up is dropped rather than let its queue grow; its browser
reconnects and starts again from the feed.

Topics: ``overlay`` gets only what goes on stream (posted replies' text, and
the streamer's words when enabled), never a candidate the filter blocked;
``dashboard`` gets every reply attempt in full and the status counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from chatling.core.events import ChatMessage, Reply, Utterance
from chatling.display import Display, SummaryRow

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
STATUS_EVERY_S = 1.0
"""Status pushes are coalesced: at most one a second, whatever the chat rate."""


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    name: str
    data: str
    """JSON text, encoded once for every page."""


@dataclass(slots=True, eq=False)  # hashed by identity: one per open page
class Subscriber:
    topics: frozenset[str]
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False


def adapter_name(path: str | None) -> str | None:
    """What the pages show of an adapter: its directory's name (``v0003``), not the path."""
    return PurePath(path).name if path else None


def reply_view(reply_id: int, reply: Reply) -> dict[str, Any]:
    """A reply attempt as the dashboard and ``/api/replies`` show it."""
    return {
        "id": reply_id,
        "offset": round(reply.offset, 2),
        "at": time.time(),
        "trigger": reply.trigger,
        "status": reply.status,
        "chosen": reply.chosen,
        "reply_to_user": reply.reply_to_user,
        "prompt": reply.prompt,
        "candidates": [
            {"text": c.text, "allowed": c.allowed, "reason": c.reason, "score": round(c.score, 3)}
            for c in reply.candidates
        ],
        "latency_s": round(reply.latency_s, 3),
        "first_token_s": round(reply.first_token_s, 3),
        "adapter": adapter_name(reply.adapter),
        "mark": None,
    }


class EventHub:
    """Fan-out of bot events to page subscribers, plus the recent replies."""

    def __init__(self, feed_size: int = 50, *, overlay_speech: bool = False) -> None:
        self.feed: deque[dict[str, Any]] = deque(maxlen=feed_size)
        self.overlay_speech = overlay_speech
        self._subscribers: set[Subscriber] = set()
        self._next_id = 1
        self._status: Callable[[], dict[str, Any]] | None = None
        self._status_pending: asyncio.TimerHandle | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def counts(self) -> dict[str, int]:
        """Open pages by kind (``overlay``, ``dashboard``)."""
        out = {"overlay": 0, "dashboard": 0}
        for sub in self._subscribers:
            for topic in sub.topics:
                out[topic] = out.get(topic, 0) + 1
        return out

    def set_status_source(self, status: Callable[[], dict[str, Any]] | None) -> None:
        self._status = status

    def subscribe(self, topics: frozenset[str]) -> Subscriber:
        sub = Subscriber(topics)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """End every page's stream (the server is stopping); their browsers reconnect."""
        for sub in list(self._subscribers):
            self._drop(sub)
        if self._status_pending is not None:
            self._status_pending.cancel()
            self._status_pending = None

    def publish(self, topic: str, name: str, data: dict[str, Any]) -> None:
        if not self._subscribers:
            return
        event = Event(topic, name, json.dumps(data, ensure_ascii=False))
        for sub in list(self._subscribers):
            if topic not in sub.topics:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("a %s page is not keeping up; dropping it (it reconnects)", topic)
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.dropped = True
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)  # end of stream for its handler

    # -- from the pipeline ----------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        view = reply_view(self._next_id, reply)
        self._next_id += 1
        self.feed.append(view)
        self.publish("dashboard", "reply", view)
        if reply.status == "posted" and reply.chosen:
            # Only the posted text: blocked candidates never reach the stream.
            self.publish(
                "overlay",
                "say",
                {"id": view["id"], "text": reply.chosen, "to": reply.reply_to_user},
            )
        self.status_changed()

    def utterance(self, utterance: Utterance) -> None:
        if self.overlay_speech:
            self.publish("overlay", "speech", {"text": utterance.text})
        self.status_changed()

    def chat(self, message: ChatMessage) -> None:
        self.status_changed()

    def find(self, reply_id: int) -> dict[str, Any] | None:
        return next((r for r in self.feed if r["id"] == reply_id), None)

    def status_changed(self) -> None:
        """Push the status to dashboards soon (once a second at most)."""
        if self._status is None or self._status_pending is not None:
            return
        if not any("dashboard" in s.topics for s in self._subscribers):
            return
        loop = asyncio.get_running_loop()
        self._status_pending = loop.call_later(STATUS_EVERY_S, self._push_status)

    def push_status_now(self) -> None:
        if self._status is not None:
            self.publish("dashboard", "status", self._status())

    def _push_status(self) -> None:
        self._status_pending = None
        self.push_status_now()


class ObservedDisplay:
    """The terminal display, with every event also handed to the web pages."""

    def __init__(self, inner: Display, hub: EventHub) -> None:
        self.inner = inner
        self.hub = hub

    def utterance(self, utterance: Utterance) -> None:
        self.inner.utterance(utterance)
        self.hub.utterance(utterance)

    def chat(self, message: ChatMessage) -> None:
        self.inner.chat(message)
        self.hub.chat(message)

    def reply(self, reply: Reply) -> None:
        self.inner.reply(reply)
        self.hub.reply(reply)

    def summary(self, title: str, rows: list[SummaryRow]) -> None:
        self.inner.summary(title, rows)
