"""Tools for developing chatling, never shipped with it (not in the installed package).

What the tests, the benchmarks and the scripts share:

- ``pulse``: a private PulseAudio daemon with a null sink (real stream audio
  on a headless machine);
- ``fakes``: local fake Twitch (Helix, OAuth, EventSub WebSocket) and Discord
  (REST and gateway) servers for the real twitchio and discord.py clients;
- ``dougdoug_corpus``: the reader of the DougDoug development corpus in
  ``../shared`` (read in place, never copied).

The product (``chatling``) never imports this package; the import
contract in ``pyproject.toml`` (``lint-imports``, run by ``make test`` through
``tests/test_architecture.py``) says so.
"""
