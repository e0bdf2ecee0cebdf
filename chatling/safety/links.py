"""Link detection for the safety filter: any host on any public suffix.

Twitch turns ``name.tld`` into a link for every TLD, so a fixed TLD list is
always one TLD short. The suffixes come from the Public Suffix List snapshot
that ``tldextract`` ships (ICANN section; no network: ``suffix_list_urls=()``),
with IDN suffixes also in punycode (``.рф`` and ``.xn--p1ai``). Besides plain
hosts it finds URL schemes (``hxxps://``), ``www.``, IPv4 addresses, dots
written as lookalikes (``·``, ``。`` are folded to ``.`` beforehand), IPv6, in
brackets (``evil(.)com``, ``evil⟨.⟩com``) or spelled (``evil dot com``,
``discord gg slash x``, ``t dot me slash x``), and letters spread out
(``e v i l . c o m``).

``LinkAllowList`` masks the streamer's own links (``ReplySettings.allowed_links``)
before any rule looks at the text.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

import tldextract

# Dotted names that are not hosts people type as links.
_NOT_LINKS = frozenset({"asp.net", "vb.net", "ado.net", "dot.net", "f.net", "a.net"})
# Spaced dots ("evil . com") count only before the TLDs people spell out.
_COMMON_TLDS = (
    "com|net|org|io|gg|tv|ly|co|xyz|ru|info|biz|app|dev|ai|live|site|online|shop|store|"
    "club|top|link|click|uk|de|fr|cn|jp|ca|au|nl|pl|br|tk|ml|ga|cf|gq|ws|cc|su|pw|vip|"
    "win|bet|cam|page|blog|tech|gl|gd|li|vc|eu|nz|kr|tw|hk|sg|ch|se|be|me|gift|zip|"
    "fun|icu|sbs|cfd|xxx|rf|rest|buzz|quest|monster"
)
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_HOST = re.compile(rf"(?<![\w@.-])((?:{_LABEL}\.)+{_LABEL})(?![\w-])")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\s*:\s*/\s*/")
_WWW = re.compile(r"\bwww\s*\.")
_BRACKET_DOT = re.compile(r"\s*[(\[{<⟨〈‹«]\s*(?:\.|dot|d0t|punkt|point)\s*[)\]}>⟩〉›»]\s*")
_SPACED_DOT = re.compile(rf"\b([a-z0-9-]+)\s+\.\s*({_COMMON_TLDS})\b")
_SPELLED_DOT = re.compile(rf"\b([a-z0-9-]+)\s+(?:dot|d0t|punkt)\s+({_COMMON_TLDS}|lol)\b")
_SLASH = re.compile(r"\s*\b(?:slash|backslash)\b\s*")
_SPELLED_INVITE = re.compile(
    r"\b(?:discord|t|bit|tinyurl|youtu|twitch|onlyfans|telegram)\s*(?:\.|dot)?\s*"
    r"(?:gg|me|ly|com|be|tv|org)\s*/\s*\w"
)
_WITH_PATH = re.compile(r"\b[a-z0-9-]+\.[a-z]{2,}/\S")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])")
# "lol.so good", "ok.is it": a missing space between two chat words, not a host.
_ENGLISH_TLDS = frozenset("so is it to no in at do go hi my us am as by he if or an me be".split())
_CHAT_WORDS = frozenset(
    "lol lmao lmfao ok okay k yes yeah yep yup nope no so and but wow omg gg haha true same "
    "nice wait well hmm oh man bro dude yo what why how hey rip lul kek pog sure fine".split()
)
_SPREAD = re.compile(r"(?<!\S)\S(?: \S(?!\S)){2,}")


@functools.cache
def public_suffixes() -> frozenset[str]:
    """Every ICANN public suffix of the bundled PSL snapshot, IDNs also in punycode."""
    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    suffixes = {s.casefold() for s in extractor.tlds}
    for suffix in list(suffixes):
        if not suffix.isascii():
            try:
                suffixes.add(suffix.encode("idna").decode("ascii"))
            except UnicodeError:
                continue
    return frozenset(suffixes)


def _is_host(name: str) -> bool:
    labels = name.split(".")
    if name in _NOT_LINKS or len(labels) < 2:
        return False
    suffixes = public_suffixes()
    for n in range(min(3, len(labels) - 1), 0, -1):
        suffix = ".".join(labels[-n:])
        if suffix in suffixes:
            domain = labels[-n - 1]
            return not domain.isdigit() and not suffix.isdigit()
    return False


def _is_ipv6(candidate: str) -> bool:
    if sum(1 for group in candidate.split(":") if group) < 3:
        return False  # "12:30:45" is a time
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _sentence_dot(host: str) -> bool:
    domain, _, suffix = host.rpartition(".")
    return suffix in _ENGLISH_TLDS and domain in _CHAT_WORDS


def _respell(folded: str) -> str:
    text = _BRACKET_DOT.sub(".", folded)
    text = _SPELLED_DOT.sub(r"\1.\2", text)
    text = _SPACED_DOT.sub(r"\1.\2", text)
    return _SLASH.sub("/", text)


def find_links(folded: str) -> list[str]:
    """The links in ``folded`` (text after ``normalize.fold``), as written."""
    found: list[str] = []
    for text in (folded, _SPREAD.sub(lambda m: m.group().replace(" ", ""), folded)):
        if _SCHEME.search(text) or _WWW.search(text) or _IPV4.search(text):
            found.append(text)
            break
        if any(_is_ipv6(m.group()) for m in _IPV6.finditer(text)):
            found.append(text)
            break
        respelled = _respell(text)
        if _SPELLED_INVITE.search(respelled) or _WITH_PATH.search(respelled):
            found.append(respelled)
            break
        found += [
            m.group(1)
            for m in _HOST.finditer(respelled)
            if _is_host(m.group(1)) and not _sentence_dot(m.group(1))
        ]
        if found:
            break
    return found


def has_link(folded: str) -> bool:
    """Whether ``folded`` holds a URL, a host on a public suffix or a spelled-out one."""
    return bool(find_links(folded))


class LinkAllowList:
    """The streamer's own links, masked out before the filter looks at a candidate.

    An entry ``example.com`` allows that host and its subdomains with any path;
    ``youtube.com/@me`` allows only paths under it. Scheme and ``www.`` are optional.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        prefixes = []
        for entry in entries:
            bare = re.sub(r"^[a-z]+://", "", entry.strip().casefold()).removeprefix("www.")
            if bare:
                prefixes.append(re.escape(bare.rstrip("/")))
        self._pattern = (
            re.compile(
                rf"(?i)(?<![\w.-])(?:https?://)?(?:[\w-]+\.)*(?:{'|'.join(prefixes)})"
                r"(?:[/?#][^\s]*)?(?![\w.-]*\w)"
            )
            if prefixes
            else None
        )

    def mask(self, text: str) -> str:
        """``text`` with allowed links replaced by a space."""
        return self._pattern.sub(" ", text) if self._pattern else text
