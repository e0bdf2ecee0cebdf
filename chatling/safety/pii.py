"""Personal data for the safety filter: phones, cards, IDs, e-mail, addresses.

Phone numbers are found by ``phonenumbers`` (Google's libphonenumber, at
``POSSIBLE`` leniency, US as the default region, any region for ``+``
numbers) on the text with every dash and slash made ``-``; card numbers by
the Luhn check (13-19 digits); ID numbers (SSN shapes, also bare after
``ssn``) and spread digits by the digit-group heuristic the filter had
before. Game talk and dates pass: ``Mario Kart 8``, ``GTA 5``, ``2019-2023``,
``12/25/2026``, scores, versions and counting. Street addresses are matched
in English (upper or lower case, with a house number that starts the
phrase or follows ``at``/``on``/``is``/..., so ``GTA 5 Grove Street`` passes)
and in the common continental shapes (``Hauptstraße 5``, ``12 rue de
Rivoli``, ``calle Mayor 12``).
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata

_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―−_/⁄∕"})
_NUMBER = re.compile(r"(?<![\w.,])(?:\+\s?)?\(?\d+\)?(?:[ .-]\(?\d+\)?)*(?![\w])")
_AT = r"(?:\s*@\s*|\s*[(\[{<]\s*at\s*[)\]}>]\s*)"
_DOT = r"(?:\s*\.\s*|\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
_TLDS = (
    "com|net|org|io|gg|tv|ly|co|xyz|ru|info|biz|app|dev|ai|live|site|online|shop|store|"
    "uk|de|fr|cn|jp|ca|au|nl|pl|br|eu|me|edu|gov|us|es|it|se|ch|be"
)
_MAILERS = "gmail|googlemail|yahoo|hotmail|outlook|live|protonmail|proton|icloud|aol|gmx|mail"
_EMAIL = re.compile(
    rf"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{{2,}}\b"
    rf"|\b[a-z0-9._%+-]+{_AT}[a-z0-9-]+(?:{_DOT}[a-z0-9-]+)*{_DOT}(?:{_TLDS})\b"
    rf"|\b[a-z0-9._%+-]+\s+at\s+[a-z0-9-]+\s+dot\s+(?:{_TLDS})\b"
    rf"|\b[a-z0-9._%+-]+(?:{_AT}|\s+at\s+)(?:{_MAILERS})\b"
)
_ID_KEYWORD = re.compile(
    r"\b(?:ssn|social security(?: number| no)?|sin|tax id|passport(?: number| no)?)\b"
    r"\W{0,3}(?:is\W{0,3}|#\W?)?(\d[\d -]{7,12}\d)\b"
)
_STOP = (
    r"(?!(?:on|in|at|of|the|my|your|his|her|our|their|this|that|down|up|across|a|an|"
    r"more|guys|people|of|times|days|years|hours|minutes|laps|kills|wins)\b)"
)
_SUFFIX = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|ln|dr|pl|ct|terrace|crescent|highway|hwy|"
    r"parkway|pkwy|cir|sq"
)
# Also game and everyday words ("top lane", "no way"): only capitalised, or before ", city".
_AMBIGUOUS_SUFFIX = r"lane|drive|way|place|court|close|loop|circle|square|trail|alley|row|mews"
_LEADS = (
    r"at|on|is|to|in|from|near|live|lives|lived|living|address|addr|visit|meet|"
    r"located|moved|house|home|apt|apartment|unit|flat"
)
_HOUSE = rf"(?:^|(?<=[,;:(\-\[!?.])|\b(?:{_LEADS})\s+)\s*\d{{1,5}}[a-zA-Z]?,?\s+"
_NOT_AFTER = r"(?!\s+(?:is|was|level|stage|map|track|race|cup|song|boss|fight|mission)\b)"
_ADDRESS = re.compile(
    rf"{_HOUSE}(?:{_STOP}(?:[a-z][a-z'.-]*|\d+(?:st|nd|rd|th))\s+){{1,3}}(?:{_SUFFIX})\b\.?"
    rf"{_NOT_AFTER}"
    rf"|{_HOUSE}(?:{_STOP}[a-z][a-z'.-]*\s+){{1,3}}(?:{_AMBIGUOUS_SUFFIX}),\s*[a-z]{{3,}}"
)
_ADDRESS_CASED = re.compile(  # "42 Wallaby Way", "4 PRIVET DRIVE": on the un-casefolded text
    rf"{_HOUSE}(?:[A-Z][A-Za-z'.-]+\s+){{1,3}}(?i:{_AMBIGUOUS_SUFFIX}|{_SUFFIX})\b{_NOT_AFTER}"
)
_ADDRESS_FOREIGN = re.compile(
    r"\b\d{1,4}[a-z]?,?\s+(?:rue|avenue|boulevard|bd|chemin|allee|place|impasse|via|viale|"
    r"piazza|corso|calle|avenida|rua|ulica|ul\.)\s+\w+"
    r"|\b(?:calle|avenida|av\.|rua|via|viale|piazza|corso|ulica|ul\.)\s+(?:[a-z]+\s+){1,3}\d{1,4}\b"
    r"|\b[a-z]+(?:strasse|straße|str\.|weg|gasse|allee|platz|laan|straat|gatan|vagen|vej|"
    r"veien|katu|utca|damm|ufer)\s+\d{1,4}[a-z]?\b"
)
_DATE_RANGE = re.compile(
    r"^\s*(?:(?:1[89]|20)\d\d\s*-\s*(?:1[89]|20)?\d\d"
    r"|\d{1,2}\s*-\s*\d{1,2}\s*-\s*(?:\d{2}|\d{4})|\d{4}\s*-\s*\d{1,2}\s*-\s*\d{1,2})\s*$"
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_trivial(digits: str, groups: list[str]) -> bool:
    """Counts, runs, round and repeated numbers: not anybody's number."""
    if len(set(digits)) < 4:
        return True
    if len(groups) > 2 and all(int(b) == int(a) + 1 for a, b in itertools.pairwise(groups)):
        return True  # counting: "1 2 3 4 5 6 7 8 9 10"
    return all((int(b) - int(a)) % 10 == 1 for a, b in itertools.pairwise(digits))


def number_is_personal(match: str) -> bool:
    """Whether a run of digit groups reads as a phone, card or ID number.

    Counts, scores, dates, decimals and round or repeated numbers do not.
    """
    groups = re.findall(r"\d+", match)
    digits = "".join(groups)
    if not 9 <= len(digits) <= 19:
        return False
    if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits):
        return True  # a card number, spaced or not (test cards like 4111... too)
    if _is_trivial(digits, groups):
        return False
    if _DATE_RANGE.match(match):
        return False
    if match.lstrip().startswith("+"):
        return True  # international number
    if len(groups) == 1:
        return 10 <= len(digits) <= 15  # bare digits: a phone number without spaces
    if all(len(g) == 1 for g in groups):
        return 10 <= len(digits) <= 15  # spread-out digits
    return len(groups) >= 3 and all(len(g) >= 2 for g in groups[1:])


@functools.cache
def load_phone_metadata() -> None:
    """libphonenumber's metadata for every region now (0.1 s), not on a first number from
    a new region in the middle of a reply."""
    PhoneMetadata.load_all()


def _phone(digits_text: str) -> bool:
    if sum(ch.isdigit() for ch in digits_text) < 7:
        return False
    for match in phonenumbers.PhoneNumberMatcher(
        digits_text, "US", leniency=phonenumbers.Leniency.POSSIBLE
    ):
        raw = match.raw_string
        groups = re.findall(r"\d+", raw)
        digits = "".join(groups)
        if len(digits) < 10 and not raw.lstrip().startswith("+"):
            continue  # 7-digit local numbers look like counts and scores
        if _is_trivial(digits, groups) or _DATE_RANGE.match(raw):
            continue
        return True
    return False


def contains_personal_data(text: str, folded: str) -> bool:
    """Whether ``text`` (``folded`` is its folded form) holds a phone, card or ID
    number, an e-mail or a street address."""
    digits = "".join(
        str(unicodedata.digit(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in folded
    ).translate(_DASHES)
    if any(number_is_personal(m.group()) for m in _NUMBER.finditer(digits)):
        return True
    if _ID_KEYWORD.search(digits) or _EMAIL.search(folded):
        return True
    if _ADDRESS.search(digits) or _ADDRESS_FOREIGN.search(digits):
        return True
    if _ADDRESS_CASED.search(unicodedata.normalize("NFKC", text)):
        return True
    return _phone(digits)
