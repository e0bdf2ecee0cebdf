"""The learning loop: the adapter registry and its pointer (``registry``), the
live bot's watcher that hot-swaps what serves (``watcher``), the nightly
schedule (``schedule``), the retrain run itself (``nightly``) and the gate a
candidate adapter must pass before it is promoted (``gate``).
Data flow: docs/architecture.md, "An adapter"."""
