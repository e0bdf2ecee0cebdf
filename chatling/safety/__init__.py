"""The safety filter (``filter.SafetyFilter``) and its parts, one module per kind of harm.

``normalize`` folds disguised text (confusables, leetspeak, zalgo) for ``terms``
(the block list), ``links``, ``pii`` (personal data), ``echo`` (the prompt's own
text), ``form`` (impersonation, blank lines, floods) and ``learned`` (a local
offensive-language classifier). Callers import from here.
"""

from chatling.safety.filter import (
    ALL_STEPS,
    SafetyFilter,
    Verdict,
    clean,
    contains_link,
    contains_personal_data,
    dedupe_key,
    fold,
    load_blocked_terms,
)

__all__ = [
    "ALL_STEPS",
    "SafetyFilter",
    "Verdict",
    "clean",
    "contains_link",
    "contains_personal_data",
    "dedupe_key",
    "fold",
    "load_blocked_terms",
]
