"""Rules on a candidate's form for the safety filter: impersonation, blank, flood.

- ``impersonation``: a line dressed as a moderator, the broadcaster, Twitch
  itself or a known chat bot (``Nightbot: ...``, ``[MOD] ...``, ``<Moderator>
  ...``, ``User has been banned``), after folding, so lookalike letters do not
  help;
- ``blank``: a line with nothing visible (only U+200D, Hangul fillers, Braille
  blanks...);
- ``flood``: one word or emote 10+ times making 80% of the line, one
  character 40+ times in a row, or 150+ characters of almost no variety
  (chat's own ``Doug Doug Doug ...`` of 8-9 words passes).
"""

from __future__ import annotations

import re
from collections import Counter

from chatling.safety.normalize import visible

KNOWN_BOTS = (
    "nightbot|streamelements|streamlabs|moobot|fossabot|wizebot|botisimo|deepbot|phantombot|"
    "coebot|ankhbot|streamlootsbot|soundalerts|sery_bot|commanderroot|kofistreambot|"
    "pokemoncommunitygame|own3d|blerp|twitch|twitchbot|automod|system|admin|staff"
)
_ROLES = r"mod|mods|moderator|broadcaster|streamer|admin|staff|vip|owner|twitch|system|automod"
_IMPERSONATION = re.compile(
    rf"^\W*(?:(?:{KNOWN_BOTS})\s*(?:\(\w+\)\s*)?[^\w\s]{{0,3}}\s*:"
    rf"|[\[(<{{|【「〔]\s*(?:{_ROLES})\s*[\])>}}|】」〕]"
    rf"|(?:{_ROLES})\s*:)"
    r"|\b(?:has been|was|got) (?:permanently )?(?:banned|timed out|suspended)"
    r"(?: from (?:the )?(?:chat|channel))?(?: for \d+ ?(?:s|sec|seconds|m|min|minutes|h|hours))?\b"
    r"|\btimed out for \d+ ?(?:s|sec|seconds|m|min|minutes)\b"
    r"|\bmessage (?:was )?(?:deleted|removed) by (?:a )?moderator\b"
)
_SAME_CHAR = re.compile(r"(\S)\1{39,}")


def impersonates(folded: str) -> bool:
    """Whether the folded line poses as a moderator, Twitch or a chat bot."""
    return _IMPERSONATION.search(folded) is not None


def is_blank(text: str) -> bool:
    """Whether nothing in ``text`` would show in chat."""
    return not visible(text)


def is_flood(text: str) -> bool:
    """Whether ``text`` repeats one thing until it fills the line (see the module docstring)."""
    if _SAME_CHAR.search(text):
        return True
    words = text.split()
    if len(words) >= 10:
        _word, count = Counter(w.casefold() for w in words).most_common(1)[0]
        if count >= 10 and count / len(words) >= 0.8:
            return True
    squeezed = "".join(words)
    return len(squeezed) >= 150 and len(set(squeezed)) <= 4
