"""Hardening suites: hostile chat, fuzzed input files, secrets, load and faults.

Every test here is marked ``hardening``. The default suite runs a fast subset;
``CHATLING_HARDENING_FULL=1`` runs the full versions, which write their counts
to ``tests/hardening/results/<name>.json`` (cited by ``docs/reliability.md``).
"""
