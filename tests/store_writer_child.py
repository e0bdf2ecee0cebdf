"""Child process of the store durability test: write events until killed.

Run: ``python tests/store_writer_child.py DB_PATH``

Opens a ``Store`` with a short flush interval, starts one stream and then, in
a loop, enqueues a mixed chunk of utterances, chat messages and replies,
awaits ``flush()`` and writes the committed counts as one JSON line to stdout
(flushed at once). Every line is a promise: those rows are committed, so they
must be in the file after any kill that comes later. The background writer
commits too, so a kill can land in its transactions as well as in flush().
stdout is the protocol with the parent test, which is why this prints.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.core.events import Candidate, ChatMessage, Reply, Utterance
from chatling.store import Store

CHUNK = 40


async def write_forever(path: Path) -> None:
    """Enqueue, flush, report; repeat until the parent kills this process."""
    async with Store.open(path, flush_interval_s=0.003, max_batch=32) as store:
        stream_id = await store.start_stream("durability", "replay", "test", "toy", None)
        n = 0
        while True:
            for _ in range(CHUNK):
                n += 1
                offset = n * 0.1
                if n % 3 == 0:
                    store.add_utterance(stream_id, Utterance(offset, offset + 0.1, f"words {n}"))
                elif n % 3 == 1:
                    message = ChatMessage(offset, f"user{n % 7}", f"chat {n}", message_id=f"m{n}")
                    store.add_chat(stream_id, message)
                else:
                    candidate = Candidate(f"reply {n}", allowed=True, reason="ok", score=0.5)
                    store.add_reply(
                        stream_id,
                        Reply(offset, "quiet", f"prompt {n}", [candidate], status="posted"),
                    )
                if n % 10 == 0:
                    await asyncio.sleep(0)  # let the background writer take a batch
            await store.flush()
            counts = store.committed
            line = {"utterances": counts.utterances, "chat": counts.chat, "replies": counts.replies}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(write_forever(Path(sys.argv[1])))
