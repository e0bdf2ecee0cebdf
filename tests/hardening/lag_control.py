"""Control for the event-loop lag probe: the same 10 ms sleeper in an idle process.

Run: ``python tests/hardening/lag_control.py`` (stop it with SIGTERM)

Sleeps 10 ms in a loop and records how late it wakes, until SIGTERM; then
prints one JSON line (samples, p50, p99, max in ms). Nothing else runs in this
process, so its lag is what the machine's other jobs cost any thread; the load
test compares the bot's event-loop lag with it. stdout is the protocol.
"""

from __future__ import annotations

import json
import signal
import time


class _Stop(Exception):
    pass


def _stop(*_: object) -> None:
    raise _Stop


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    lags: list[float] = []
    try:
        while True:
            before = time.monotonic()
            time.sleep(0.010)
            lags.append(max(0.0, time.monotonic() - before - 0.010))
    except _Stop:
        pass
    lags.sort()

    def ms(q: float) -> float:
        if not lags:
            return 0.0
        return round(lags[min(len(lags), max(1, round(q / 100 * len(lags)))) - 1] * 1000, 2)

    print(json.dumps({"samples": len(lags), "p50_ms": ms(50), "p99_ms": ms(99), "max_ms": ms(100)}))


if __name__ == "__main__":
    main()
