"""The demo stream written into a chatling SQLite log, as a live run would have stored it."""

from __future__ import annotations

import json
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


async def write_demo_log(db: Path) -> int:
    """The demo stream as the bot would have logged it: script lines as utterances, its chat.

    Used by bench/nightly.py and tests/test_nightly.py as "the logs since the last run".
    The demo is the project's own (MIT), so this may run anywhere.
    """
    from chatling.chatlog import read_chat_log
    from chatling.core.events import Utterance
    from chatling.store import Store

    script = json.loads((DEMO / "script.json").read_text())
    async with Store.open(db) as store:
        stream = await store.start_stream("demo", "replay", "demo", "smollm2", None)
        for line in script:
            end = line["start"] + len(line["text"].split()) / 2.5
            store.add_utterance(stream, Utterance(line["start"], end, line["text"]))
        for message in read_chat_log(DEMO / "chat.json"):
            store.add_chat(stream, message)
        await store.end_stream(stream)
    return stream
