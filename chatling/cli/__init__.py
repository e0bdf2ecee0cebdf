"""The `chatling` command: one parser (``main``), one logging set-up (``common``) and one
module per command group. Only this package wires commands together; nothing outside it
imports it (an import-linter contract, tests/test_architecture.py)."""
