"""What every layer may use: settings, errors, the event types, the stream clock, paths.

These modules import nothing else of the product (``tests/test_architecture.py``)."""
