"""The one shape of a provider's event vocabulary, and the one way its webhook JSON is read.

Every provider's ``events.py`` states what each of the provider's own event names becomes in
one table of this shape::

    EVENTS: Final[Vocabulary] = vocabulary({
        "email.delivered": Term(EventType.DELIVERED),
        "email.bounced": Term(EventType.BOUNCED, bounce=BounceKind.HARD),
        "proxy_open": Term(EventType.OPENED, machine=True),
        "domain.created": Term(EventType.UNKNOWN, reason="a domain was created", recipient=False),
    })
    _EVENTS: Final = lookup(EVENTS)  # the plain dict the parser reads

A :class:`Term` holds what the name alone says: the canonical type, the bounce kind and the
machine flag when the name decides them, a fixed reason for names whose events carry none, and
whether the event concerns a recipient at all. What an event's own fields refine (a status
that makes a bounce soft, a user agent that marks a machine open) stays in the provider's
mapping code, which starts from the term. A name missing from the table becomes ``unknown``,
kept whole with its raw item, never an exception.

:func:`vocabulary` freezes a table for the public name (a read-only mapping that the docs and
tests read); :func:`lookup` copies it into the plain ``dict`` the hot parse path reads (a
read-only mapping's ``get`` costs about three times a dict's).

:func:`read_json` is how every adapter decodes an untrusted webhook body: through
``unimailtrack._json``'s bounded reader, looked up when called so that its bounds on size and
depth apply to every provider, and with every decoding failure turned into the provider's
``PayloadError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from unimailtrack import _json
from unimailtrack.errors import PayloadError
from unimailtrack.model import BounceKind, EventType

__all__ = ["UNMAPPED", "Term", "Vocabulary", "event_key", "lookup", "read_json", "vocabulary"]


@dataclass(frozen=True, slots=True)
class Term:
    """What one of a provider's event names becomes.

    ``type``: the canonical event type. ``bounce``: the bounce kind the name itself decides
    (``hard_bounce`` is hard), None when the event's fields decide or there is none.
    ``machine``: True when the name itself says an open was made by a machine (a privacy
    proxy), False when it says a person, None when it does not say. ``reason``: a fixed reason
    for events of this name, for names whose events carry no text of their own (why a known
    name maps to ``unknown``, for instance). ``recipient``: False for names that concern no
    recipient (an account, a domain, a contact list): such an event is kept with recipient
    ``""`` and no message id.
    """

    type: EventType
    bounce: BounceKind | None = None
    machine: bool | None = None
    reason: str | None = None
    recipient: bool = True

    def __post_init__(self) -> None:
        if self.bounce is not None and self.type not in _KINDS_WITH_BOUNCE:
            raise ValueError(f"a {self.type} event has no bounce kind")
        if self.machine is not None and self.type is not EventType.OPENED:
            raise ValueError("only an open is made by a person or a machine")
        if not self.recipient and self.type is not EventType.UNKNOWN:
            raise ValueError("an event that concerns no recipient can only be unknown")

    def describe(self) -> str:
        """How the docs' mapping tables write this term: ``bounced (hard)``, ``opened
        (machine)``, ``unknown (no recipient)``."""
        notes = [
            note
            for note in (
                self.bounce,
                {True: "machine", False: "person", None: None}[self.machine],
                None if self.recipient else "no recipient",
            )
            if note
        ]
        return f"{self.type} ({', '.join(notes)})" if notes else str(self.type)


_KINDS_WITH_BOUNCE: Final = frozenset({EventType.BOUNCED, EventType.DEFERRED, EventType.DROPPED})

Vocabulary = Mapping[str, Term]
"""A provider's event names and what each becomes."""

UNMAPPED: Final = Term(EventType.UNKNOWN)
"""What a name missing from a vocabulary becomes."""


def vocabulary(terms: Mapping[str, Term]) -> Vocabulary:
    """``terms`` as a read-only table, checked: every name a non-empty string, every value a
    :class:`Term`."""
    for name, term in terms.items():
        if not (isinstance(name, str) and name):
            raise ValueError(f"an event name must be a non-empty string, not {name!r}")
        if not isinstance(term, Term):
            raise TypeError(f"{name!r} must map to a Term, not {type(term).__name__}")
    return MappingProxyType(dict(terms))


def lookup(table: Vocabulary) -> dict[str, Term]:
    """The plain dict a parser reads ``table`` through: the same entries, a faster ``get``."""
    return dict(table)


def read_json(
    body: bytes | str,
    *,
    provider: str,
    what: str = "webhook body",
    decode: Callable[[bytes | str], Any] | None = None,
) -> Any:
    """Decode an untrusted JSON body; any failure is ``provider``'s ``PayloadError``.

    The decoder is ``unimailtrack._json``'s bounded reader (``load_untrusted``), looked up on
    every call, so that its bounds on size and depth hold for every adapter. ``decode``
    replaces the JSON decoder inside those bounds (the standard library's, to compare).
    """
    reader = _json.load_untrusted
    try:
        return reader(body) if decode is None else reader(body, decode=decode)
    except PayloadError as exc:
        if exc.provider is None:
            exc.provider = provider
        raise
    except (ValueError, RecursionError, TypeError) as exc:
        raise PayloadError(
            f"the {provider} {what} is not valid JSON", provider=provider, detail=str(exc)[:200]
        ) from None


def event_key(text: str) -> str:
    """A deterministic event id (32 hex digits) from ``text``, which names everything that
    tells the event apart (provider, event name, message, time, recipient ...): one BLAKE2b
    over one string, about a third of what a digest of separate parts costs."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
