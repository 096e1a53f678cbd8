"""Deliverability facts that hold whichever provider sent the mail: no I/O, no provider.

Three classifications the tracker applies where it decides suppression, alerts and
engagement:

- :func:`sender_auth_failure`: a refusal because the *sender* failed authentication (SPF,
  DKIM, DMARC, reverse DNS), read from the SMTP enhanced status code (RFC 3463, RFC 7372) and
  the wording of the reply. Gmail answers ``550 5.7.26``, Outlook ``550 5.7.515`` or
  ``5.7.509``, others ``5.7.1`` with the check in the text. Such a refusal is a block with
  the reason ``sender_auth``: it says nothing about the recipient's address, so it never
  suppresses it, and it raises an alert naming the failed check.
- :func:`mailbox_provider`: who runs a recipient domain's mail (``gmail.com`` and
  ``googlemail.com`` are both Google; ``outlook.com``, ``hotmail.*``, ``live.*`` and
  ``msn.com`` are Microsoft; ...), from a table, or optionally from the domain's MX hosts
  through an :class:`MxLookup` the application gives (never required).
- :func:`classify_open` and :func:`classify_click`: human, machine or unknown, from the
  provider's own flag and documented heuristics (a privacy proxy fetching within seconds of
  delivery; a link scanner clicking within seconds of delivery).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache

from unimailtrack.errors import MissingDependency

__all__ = [
    "CLICK_WINDOW",
    "OPEN_WINDOW",
    "SENDER_AUTH",
    "AuthCheck",
    "Engagement",
    "MxLookup",
    "SenderAuthFailure",
    "classify_click",
    "classify_open",
    "dns_mx_resolver",
    "enhanced_status",
    "mailbox_provider",
    "sender_auth_failure",
]

SENDER_AUTH = "sender_auth"
"""The reason a sender-authentication refusal is classified under (a block)."""


# --------------------------------------------------------------------------- sender authentication


class AuthCheck(StrEnum):
    """The sender-authentication check a refusal names."""

    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    REVERSE_DNS = "reverse_dns"
    AUTHENTICATION = "authentication"
    """The receiver said the sender is unauthenticated without naming one check."""


@dataclass(frozen=True, slots=True)
class SenderAuthFailure:
    """A refusal caused by the sender's authentication: ``checks`` it names (at least one),
    the enhanced status code if any, and the reply as given."""

    checks: tuple[AuthCheck, ...]
    status: str | None
    reply: str

    @property
    def check(self) -> str:
        """The failed checks as one name: ``"dmarc"``, ``"spf+dkim"``, ..."""
        return "+".join(check.value for check in self.checks)


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

_STATUS_CHECKS: Mapping[str, tuple[AuthCheck, ...]] = {
    # RFC 7372, "Email Authentication Status Codes"
    "7.20": (AuthCheck.DKIM,),  # no passing DKIM signature found
    "7.21": (AuthCheck.DKIM,),  # no acceptable DKIM signature found
    "7.22": (AuthCheck.DKIM,),  # no valid author-matched DKIM signature found
    "7.23": (AuthCheck.SPF,),  # SPF validation failed
    "7.24": (AuthCheck.SPF,),  # SPF validation error
    "7.25": (AuthCheck.REVERSE_DNS,),  # reverse DNS validation failed
    "7.26": (AuthCheck.AUTHENTICATION,),  # multiple authentication checks failed (Gmail)
    # Microsoft's own codes (Outlook.com, Exchange Online)
    "7.509": (AuthCheck.DMARC,),  # sending domain does not pass DMARC verification
    "7.515": (AuthCheck.AUTHENTICATION,),  # does not meet the required authentication level
}
"""Enhanced status codes (subject.detail) that mean the sender failed authentication."""

_WORDS: tuple[tuple[AuthCheck, re.Pattern[str]], ...] = (
    (AuthCheck.DMARC, re.compile(r"\bdmarc\b", re.IGNORECASE)),
    (AuthCheck.SPF, re.compile(r"\bspf\b|sender policy framework", re.IGNORECASE)),
    (AuthCheck.DKIM, re.compile(r"\bdkim\b|domainkeys", re.IGNORECASE)),
    (AuthCheck.REVERSE_DNS, re.compile(r"reverse dns|\bptr record|\brdns\b", re.IGNORECASE)),
)
_FAILURE_WORDING = re.compile(
    r"fail|not pass|unauthenticated|not authenticated|authentication|reject|"
    r"not accepted|invalid|missing|does not|didn't|did not|no valid|alignment|aligned",
    re.IGNORECASE,
)
_UNAUTHENTICATED = re.compile(
    r"unauthenticated|not authenticated|authentication level|authenticate with",
    re.IGNORECASE,
)


def enhanced_status(smtp_status: str | None, reply: str | None = None) -> str | None:
    """The enhanced status code (``"5.7.26"``) in ``smtp_status``, else in ``reply``."""
    for text in (smtp_status, reply):
        if text:
            found = _ENHANCED.search(text)
            if found:
                return ".".join(found.groups())
    return None


def sender_auth_failure(smtp_status: str | None, reply: str | None) -> SenderAuthFailure | None:
    """The sender-authentication failure a refusal reports, or None when it reports none.

    A failure is recognised from an authentication status code (``x.7.20``-``x.7.26``,
    Microsoft's ``x.7.509`` and ``x.7.515``), or from a policy refusal (``x.7.x`` or no
    code at all) whose wording names SPF, DKIM, DMARC or reverse DNS together with a
    failure. The checks named in the wording are preferred to the code's generic meaning:
    Gmail's ``5.7.26`` says "DMARC policy" or "SPF or DKIM" in its text.
    """
    return _classified(smtp_status or "", reply or "")


@lru_cache(maxsize=4096)
def _classified(smtp_status: str, reply: str) -> SenderAuthFailure | None:
    status = enhanced_status(smtp_status, reply)
    text = f"{smtp_status} {reply}"
    named = tuple(check for check, pattern in _WORDS if pattern.search(text))
    by_code = None
    if status is not None:
        klass, subject, detail = status.split(".")
        if klass == "2":
            return None
        by_code = _STATUS_CHECKS.get(f"{subject}.{detail}")
        if by_code is None and subject != "7":
            return None  # an address (x.1.x) or mailbox (x.2.x) problem, whatever it says
    if by_code is None and (not named or not _FAILURE_WORDING.search(text)):
        if not (status and status.split(".")[1] == "7" and _UNAUTHENTICATED.search(text)):
            return None
        named = (AuthCheck.AUTHENTICATION,)
    checks = named or by_code or (AuthCheck.AUTHENTICATION,)
    return SenderAuthFailure(checks=checks, status=status, reply=reply or smtp_status)


# --------------------------------------------------------------------------- mailbox providers

_PROVIDER_DOMAINS: Mapping[str, str] = {
    domain: provider
    for provider, domains in {
        "google": ("gmail.com", "googlemail.com"),
        "microsoft": ("outlook.com", "hotmail.com", "live.com", "msn.com", "windowslive.com"),
        "yahoo": (
            "yahoo.com",
            "ymail.com",
            "rocketmail.com",
            "aol.com",
            "aim.com",
            "verizon.net",
            "att.net",
            "sbcglobal.net",
            "bellsouth.net",
        ),
        "apple": ("icloud.com", "me.com", "mac.com"),
        "proton": ("proton.me", "protonmail.com", "protonmail.ch", "pm.me"),
        "united-internet": ("gmx.de", "gmx.net", "gmx.com", "gmx.at", "gmx.ch", "web.de"),
        "yandex": ("yandex.ru", "yandex.com", "ya.ru"),
        "mail.ru": ("mail.ru", "bk.ru", "inbox.ru", "list.ru"),
        "comcast": ("comcast.net",),
        "zoho": ("zoho.com", "zohomail.com"),
        "fastmail": ("fastmail.com", "fastmail.fm"),
        "orange": ("orange.fr", "wanadoo.fr"),
    }.items()
    for domain in domains
}
"""Consumer mail domains and who runs them."""

_PROVIDER_BRANDS: Mapping[str, str] = {
    "hotmail": "microsoft",
    "outlook": "microsoft",
    "live": "microsoft",
    "yahoo": "yahoo",
    "aol": "yahoo",
}
"""Brands with a domain per country (``hotmail.co.uk``, ``yahoo.fr``, ``live.de``)."""
_COUNTRY_SUFFIX = re.compile(r"(?:[a-z]{2,3}\.)?[a-z]{2,3}")

_MX_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("google.com", "google"),
    ("googlemail.com", "google"),
    ("protection.outlook.com", "microsoft"),
    ("outlook.com", "microsoft"),
    ("hotmail.com", "microsoft"),
    ("yahoodns.net", "yahoo"),
    ("icloud.com", "apple"),
    ("protonmail.ch", "proton"),
    ("gmx.net", "united-internet"),
    ("web.de", "united-internet"),
    ("yandex.net", "yandex"),
    ("mail.ru", "mail.ru"),
    ("zoho.com", "zoho"),
    ("messagingengine.com", "fastmail"),
)
"""MX host suffixes of the mailbox providers that host other companies' domains."""


def mailbox_provider(domain: str, *, mx: MxLookup | None = None) -> str:
    """Who runs ``domain``'s mail: a provider name from the table (``"google"``,
    ``"microsoft"``, ``"yahoo"``, ...), else the provider its MX hosts belong to when an
    ``mx`` lookup is given and answers, else the domain itself."""
    domain = domain.strip().lower().rstrip(".")
    found = _PROVIDER_DOMAINS.get(domain)
    if found is not None:
        return found
    brand, _, rest = domain.partition(".")
    if brand in _PROVIDER_BRANDS and _COUNTRY_SUFFIX.fullmatch(rest):
        return _PROVIDER_BRANDS[brand]
    if mx is not None and domain:
        by_mx = mx.provider(domain)
        if by_mx is not None:
            return by_mx
    return domain


def provider_of_mx_hosts(hosts: Sequence[str]) -> str | None:
    """The mailbox provider ``hosts`` (a domain's MX hosts) belong to, if one is known."""
    for host in hosts:
        name = host.strip().lower().rstrip(".")
        for suffix, provider in _MX_SUFFIXES:
            if name == suffix or name.endswith("." + suffix):
                return provider
    return None


Resolver = Callable[[str], Sequence[str]]
"""``resolve(domain) -> MX host names``; raises (anything) when the lookup fails."""


class MxLookup:
    """Looks up a domain's MX hosts to tell which mailbox provider hosts it, with a cache.

    ``resolve`` does the lookup (``dns_mx_resolver()`` uses dnspython; tests pass a
    function). A failed lookup is cached for ``negative_ttl`` and reads as unknown: the
    lookup is a refinement, never a requirement.
    """

    def __init__(
        self,
        resolve: Resolver,
        *,
        ttl: timedelta = timedelta(hours=24),
        negative_ttl: timedelta = timedelta(minutes=10),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._ttl = ttl.total_seconds()
        self._negative_ttl = negative_ttl.total_seconds()
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def provider(self, domain: str) -> str | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = provider_of_mx_hosts(self._resolve(domain))
            expires = now + self._ttl
        except Exception:  # a failed lookup only means "unknown"
            found, expires = None, now + self._negative_ttl
        with self._lock:
            self._cache[domain] = (expires, found)
        return found


def dns_mx_resolver(timeout: float = 2.0) -> Resolver:
    """A resolver for :class:`MxLookup` through dnspython (which email-validator, a
    dependency, installs; should it be missing, ``MissingDependency`` says so)."""
    try:
        import dns.resolver
    except ImportError:
        raise MissingDependency("dnspython", "all", purpose="Looking up MX hosts") from None

    def resolve(domain: str) -> list[str]:
        answer = dns.resolver.resolve(domain, "MX", lifetime=timeout)
        return [str(record.exchange) for record in answer]

    return resolve


# --------------------------------------------------------------------------- engagement


class Engagement(StrEnum):
    """Who made an open or a click, as far as can be told."""

    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"


OPEN_WINDOW = timedelta(seconds=30)
"""A privacy proxy's open this soon after delivery is a prefetch, not a reader."""
CLICK_WINDOW = timedelta(seconds=30)
"""A click this soon after delivery is a link scanner following every link."""

_PROXY_AGENTS = re.compile(
    r"GoogleImageProxy|ggpht\.com|YahooMailProxy|Yahoo! Slurp|"
    r"^Mozilla/5\.0$|^Mozilla/5\.0 \(compatible\)$",  # Apple Mail Privacy Protection
    re.IGNORECASE,
)
"""User agents of image proxies that fetch on the reader's behalf (or ahead of them)."""
_SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|urldefense|safelinks|safe links|symantec|messagelabs|"
    r"trend ?micro|fortinet|fortiguard|sophos|cisco|ironport|forcepoint|zscaler|"
    r"\bbot\b|bot/|spider|crawler|preview|python-requests|python-httpx|curl/|wget/|"
    r"go-http-client|okhttp|java/|libwww|headless",
    re.IGNORECASE,
)
"""User agents of security scanners and automated clients."""


def classify_open(
    machine: bool | None,
    user_agent: str | None,
    after_delivery: timedelta | None,
    *,
    window: timedelta = OPEN_WINDOW,
) -> Engagement:
    """Who opened: ``machine`` is the provider's flag (True for a machine open, False when
    it says a person opened), ``after_delivery`` how long after delivery (None if unknown).

    Machine: the provider says so, a scanner's user agent, or a privacy proxy within
    ``window`` of delivery. Human: the provider says so, or a mail client's user agent.
    Unknown: anything else (a proxy fetching later may be the reader or not).
    """
    agent = user_agent or ""
    proxy = bool(agent) and _PROXY_AGENTS.search(agent) is not None
    if machine is True or (agent and _SCANNER_AGENTS.search(agent)):
        return Engagement.MACHINE
    if proxy and after_delivery is not None and after_delivery <= window:
        return Engagement.MACHINE
    if machine is False or (agent and not proxy):
        return Engagement.HUMAN
    return Engagement.UNKNOWN


def classify_click(
    machine: bool | None,
    user_agent: str | None,
    after_delivery: timedelta | None,
    *,
    window: timedelta = CLICK_WINDOW,
) -> Engagement:
    """Who clicked: a machine when the provider says so, a scanner's user agent, or
    within ``window`` of delivery (link scanners follow every link at once); human when the
    provider says so or a browser's user agent came; unknown otherwise."""
    agent = user_agent or ""
    if machine is True or (agent and _SCANNER_AGENTS.search(agent)):
        return Engagement.MACHINE
    if after_delivery is not None and after_delivery <= window:
        return Engagement.MACHINE
    if machine is False or agent:
        return Engagement.HUMAN
    return Engagement.UNKNOWN
