"""Credentials on webhooks that carry no signature, and where a request came from.

Some providers (Postmark, Brevo) do not sign their webhooks. What protects such an endpoint is a
secret the provider sends with every request, in the ``Authorization`` header: HTTP Basic
credentials written into the webhook URL (``https://user:password@app.example.com/...``) or a
bearer token configured on the webhook. :class:`WebhookCredentials` accepts a request only when
that header carries one of the configured secrets, and, when asked, only from an allowed
network. Every check fails closed, and every refusal is the same ``SignatureError`` (the cause
goes to the ``unimailtrack.webhooks`` logger only).

Secrets: a string with a ``:`` is Basic credentials (``"user:password"``), any other string a
bearer token. Several may be configured at once, to rotate them without refusing a request in
between. Each candidate is compared with every configured secret of its kind through an HMAC
under a key drawn when the checker is built, so the comparison takes the same time whatever the
lengths and whichever secret matches.

Where a request came from: a provider's webhook requests come from the networks it publishes,
so ``allowed_networks`` can require that the client address be one of them. The address is the
TCP peer of the connection, which only the web server knows; the library's web app and its
Flask and Django views hand it to the adapter in the header :data:`PEER_HEADER`, after removing
any header of that name the client sent (:func:`with_peer`). An application that calls an
adapter from a framework of its own does the same. Behind a reverse proxy the peer is the
proxy: name the proxies in ``trusted_proxies`` and the client address is read from
``forwarded_header`` (``X-Forwarded-For`` by default), right to left, skipping trusted proxies:
the first address a trusted proxy did not add itself is the client. A forwarded header is never
read when the peer is not a trusted proxy, so a client cannot claim an address by sending one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Final

from unimailtrack.errors import ConfigurationError, SignatureError

__all__ = [
    "MAX_AUTHORIZATION",
    "PEER_HEADER",
    "WebhookCredentials",
    "authorization_header",
    "with_peer",
]

PEER_HEADER: Final = "x-unimailtrack-peer"
"""The header in which the web app hands an adapter the TCP peer address of a request."""

MAX_AUTHORIZATION: Final = 4096
"""Characters of an ``Authorization`` header read at most."""

_MAX_FORWARDED: Final = 4096
_MAX_HOPS: Final = 32

_log = logging.getLogger("unimailtrack.webhooks")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def with_peer(headers: Mapping[str, str], peer: str | None) -> dict[str, str]:
    """``headers`` without any :data:`PEER_HEADER` the client sent, and with the connection's
    peer address when it is known: what a web app hands the webhook receiver."""
    found = {k: v for k, v in headers.items() if k.lower() != PEER_HEADER}
    if peer:
        found[PEER_HEADER] = peer
    return found


def authorization_header(secret: str) -> dict[str, str]:
    """The ``Authorization`` header a provider sends for ``secret``: Basic for
    ``"user:password"``, Bearer for a token. For tests and the emulator."""
    if ":" in secret:
        encoded = base64.b64encode(secret.encode("utf-8")).decode("ascii")
        return {"Authorization": f"Basic {encoded}"}
    return {"Authorization": f"Bearer {secret}"}


def _networks(values: str | Iterable[str], what: str) -> tuple[Network, ...]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)
    except ValueError as exc:
        raise ConfigurationError(f"{what} must be IP addresses or networks: {exc}") from None


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.partition(":")[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


class WebhookCredentials:
    """Accept a webhook request only when it carries a configured credential (and, when asked,
    comes from an allowed network).

    ``secrets``: ``"user:password"`` (HTTP Basic) or a bare token (Bearer), one or several.
    ``allowed_networks``: CIDR networks or addresses the client must be in (none: any).
    ``trusted_proxies``: the reverse proxies in front of the application, whose
    ``forwarded_header`` is believed. ``provider`` names the sender in errors and logs.
    """

    __slots__ = (
        "_basic",
        "_bearer",
        "_key",
        "allowed_networks",
        "forwarded_header",
        "provider",
        "trusted_proxies",
    )

    def __init__(
        self,
        secrets: str | Iterable[str] = (),
        *,
        allowed_networks: str | Iterable[str] = (),
        trusted_proxies: str | Iterable[str] = (),
        forwarded_header: str = "x-forwarded-for",
        provider: str = "webhook",
    ) -> None:
        if isinstance(secrets, str):
            secrets = [secrets]
        self._key = os.urandom(32)
        basic: list[bytes] = []
        bearer: list[bytes] = []
        for secret in secrets:
            if not isinstance(secret, str) or not secret or secret != secret.strip():
                raise ConfigurationError(
                    f"a {provider} webhook secret is 'user:password' or a token, without spaces "
                    "around it"
                )
            if len(secret) > MAX_AUTHORIZATION // 2:
                raise ConfigurationError(f"a {provider} webhook secret is too long")
            user, colon, _ = secret.partition(":")
            if colon and not user:
                raise ConfigurationError(f"a {provider} Basic credential needs a user name")
            (basic if colon else bearer).append(self._digest(secret.encode("utf-8")))
        self._basic = tuple(basic)
        self._bearer = tuple(bearer)
        self.allowed_networks = _networks(allowed_networks, "allowed_networks")
        self.trusted_proxies = _networks(trusted_proxies, "trusted_proxies")
        self.forwarded_header = forwarded_header.lower()
        self.provider = provider

    @property
    def configured(self) -> bool:
        """True when at least one credential is configured."""
        return bool(self._basic or self._bearer)

    def _digest(self, value: bytes) -> bytes:
        return hmac.new(self._key, value, hashlib.sha256).digest()

    def _refuse(self, why: str) -> SignatureError:
        _log.warning("%s webhook refused: %s", self.provider, why)
        return SignatureError(provider=self.provider)

    def client_address(self, headers: Mapping[str, str]) -> Address | None:
        """The client address of a request: the peer the web app reported, or, when that peer is
        a trusted proxy, the first forwarded address no trusted proxy added. None when unknown."""
        found = {k.lower(): v for k, v in headers.items()}
        peer = _address(found.get(PEER_HEADER, ""))
        if peer is None or not _within(peer, self.trusted_proxies):
            return peer
        forwarded = found.get(self.forwarded_header, "")
        if not forwarded or len(forwarded) > _MAX_FORWARDED:
            return None if forwarded else peer
        hops = forwarded.split(",")
        if len(hops) > _MAX_HOPS:
            return None
        client: Address = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return None
            client = address
            if not _within(address, self.trusted_proxies):
                break
        return client

    def verify(self, headers: Mapping[str, str]) -> None:
        """Raise ``SignatureError`` unless ``headers`` carry a configured credential and, when
        networks are configured, the client address is in one of them."""
        if not self.configured:
            raise self._refuse("no webhook credential is configured")
        found = {k.lower(): v for k, v in headers.items()}
        authorization = found.get("authorization", "")
        if not authorization:
            raise self._refuse("the request carries no Authorization header")
        if len(authorization) > MAX_AUTHORIZATION:
            raise self._refuse("the Authorization header is too long")
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                candidate = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise self._refuse("the Basic credentials are not base64") from None
            expected = self._basic
        elif scheme == "bearer":
            candidate = value.encode("utf-8", "surrogateescape")
            expected = self._bearer
        else:
            raise self._refuse(f"the Authorization scheme {scheme[:16]!r} is not Basic or Bearer")
        digest = self._digest(candidate)
        matched = False
        for secret in expected:
            matched |= hmac.compare_digest(digest, secret)
        if not matched:
            raise self._refuse(f"the {scheme} credential matches no configured secret")
        if self.allowed_networks:
            client = self.client_address(found)
            if client is None:
                raise self._refuse("the client address is unknown or malformed")
            if not _within(client, self.allowed_networks):
                raise self._refuse(f"the client address {client} is not in an allowed network")

    def __repr__(self) -> str:
        return (
            f"<WebhookCredentials provider={self.provider!r} basic={len(self._basic)} "
            f"bearer={len(self._bearer)} networks={len(self.allowed_networks)}>"
        )
