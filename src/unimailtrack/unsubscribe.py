"""One-click unsubscribe (RFC 8058): signed links in the headers, verified without a lookup.

A send in one of the configured streams (default ``marketing``) carries, for each recipient::

    List-Unsubscribe: <https://app.example.com/u/TOKEN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

``TOKEN`` says who (the address, the stream, the tracking id) and until when, signed with
HMAC-SHA256 under the application's secret: verifying it needs the secret only, no database.
Several secrets may be configured at once (rotation): the first signs, every one verifies.
The web app answers ``POST /u/TOKEN`` (the body ``List-Unsubscribe=One-Click``) by suppressing
the address at once, and ``GET /u/TOKEN`` with a page whose button posts (mail scanners follow
GET links; they must not unsubscribe anyone). A forged, re-cut or expired token is refused.

Configuration, also keywords of ``Mailer``/``create_app``: ``UNIMAILTRACK_UNSUBSCRIBE_SECRET``
(comma-separated for rotation), ``UNIMAILTRACK_PUBLIC_URL`` (where the web app is reachable)
and ``UNIMAILTRACK_UNSUBSCRIBE_STREAMS`` (comma-separated; default ``marketing``). Without a
secret nothing is added and ``/u/`` answers 404.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from unimailtrack.errors import ConfigurationError, UnsubscribeTokenError

__all__ = [
    "DEFAULT_EXPIRY",
    "DEFAULT_STREAMS",
    "ONE_CLICK_BODY",
    "PUBLIC_URL_ENV",
    "SECRET_ENV",
    "STREAMS_ENV",
    "OneClickUnsubscribe",
    "UnsubscribeRequest",
    "email_stream",
]

SECRET_ENV = "UNIMAILTRACK_UNSUBSCRIBE_SECRET"  # noqa: S105 - the variable's name
PUBLIC_URL_ENV = "UNIMAILTRACK_PUBLIC_URL"
STREAMS_ENV = "UNIMAILTRACK_UNSUBSCRIBE_STREAMS"
DEFAULT_STREAMS = ("marketing",)
DEFAULT_EXPIRY = timedelta(days=90)
"""How long a link keeps working: long past the two days within which it must be honoured."""
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
MAX_TOKEN = 1024
"""A longer token is refused before anything in it is decoded."""
MIN_SECRET = 16

_VERSION = "u1"
_CONTEXT = b"unimailtrack one-click unsubscribe\x00"
_B64 = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """What a verified token says: who unsubscribes from which stream, until when it
    is valid, and the send it came with (its tracking id, when tracked)."""

    address: str
    stream: str
    tracking_id: str | None
    expires_at: datetime


def email_stream(email: object) -> str | None:
    """The stream of a send (``Email.stream``), None when it has none."""
    stream = getattr(email, "stream", None)
    return stream if isinstance(stream, str) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _split(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item.strip())


class OneClickUnsubscribe:
    """Signs and verifies one-click unsubscribe tokens and builds the two headers.

    ``secrets``: one or more secrets (the first signs); ``public_url``: the base URL of the
    web app (``https://``, or ``http://`` on a loopback host for development); ``streams``:
    the streams whose sends carry the headers; ``expiry``: how long a token is valid;
    ``mailto``: an optional ``mailto:`` address offered beside the link.
    """

    def __init__(
        self,
        secrets: str | Sequence[str],
        *,
        public_url: str,
        streams: str | Sequence[str] = DEFAULT_STREAMS,
        expiry: timedelta = DEFAULT_EXPIRY,
        mailto: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        keys = _split(secrets)
        if not keys:
            raise ConfigurationError("one-click unsubscribe needs at least one secret")
        if any(len(key) < MIN_SECRET for key in keys):
            raise ConfigurationError(
                f"an unsubscribe secret must be at least {MIN_SECRET} characters long"
            )
        self._keys = tuple(key.encode() for key in keys)
        parts = urlsplit(public_url.strip())
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ConfigurationError(
                f"{PUBLIC_URL_ENV} must be an https:// URL (http:// only on a loopback host), "
                f"not {public_url!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigurationError(f"{PUBLIC_URL_ENV} must not have a query or fragment")
        self.public_url = public_url.strip().rstrip("/")
        self.streams = frozenset(_split(streams))
        if expiry <= timedelta(0):
            raise ConfigurationError("the unsubscribe link expiry must be positive")
        self.expiry = expiry
        if mailto is not None and ("<" in mailto or ">" in mailto or "," in mailto):
            raise ConfigurationError(f"invalid unsubscribe mailto address {mailto!r}")
        self.mailto = mailto
        self._now = clock or (lambda: datetime.now(UTC))

    @classmethod
    def configured(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        secret: str | Sequence[str] | None = None,
        public_url: str | None = None,
        streams: str | Sequence[str] | None = None,
        expiry: timedelta = DEFAULT_EXPIRY,
        mailto: str | None = None,
    ) -> OneClickUnsubscribe | None:
        """The signer the keywords (else ``env``) configure, or None without a secret."""
        env = env or {}
        secret = secret if secret is not None else env.get(SECRET_ENV)
        if not _split(secret):
            return None
        url = public_url if public_url is not None else env.get(PUBLIC_URL_ENV)
        if not url:
            raise ConfigurationError(
                f"one-click unsubscribe needs {PUBLIC_URL_ENV} (or public_url=): the base URL "
                "at which the web app answers /u/"
            )
        named = streams if streams is not None else env.get(STREAMS_ENV)
        return cls(
            secret or (),
            public_url=url,
            streams=DEFAULT_STREAMS if named is None else named,
            expiry=expiry,
            mailto=mailto,
        )

    def __repr__(self) -> str:
        return f"<OneClickUnsubscribe {self.public_url} streams={sorted(self.streams)}>"

    # ------------------------------------------------------------------ signing

    def _mac(self, key: bytes, signed: str) -> bytes:
        return hmac.new(key, _CONTEXT + signed.encode("ascii"), hashlib.sha256).digest()

    def token(
        self,
        address: str,
        stream: str,
        tracking_id: str | None = None,
        *,
        now: datetime | None = None,
    ) -> str:
        """A token for ``address`` unsubscribing from ``stream``, valid for ``expiry``."""
        expires = int((now or self._now()).timestamp() + self.expiry.total_seconds())
        body = json.dumps(
            [address, stream, tracking_id, expires], separators=(",", ":"), ensure_ascii=False
        )
        signed = f"{_VERSION}.{_b64(body.encode())}"
        return f"{signed}.{_b64(self._mac(self._keys[0], signed))}"

    def verify(self, token: str, *, now: datetime | None = None) -> UnsubscribeRequest:
        """What ``token`` says; ``UnsubscribeTokenError`` unless one of the secrets signed it and
        it has not expired. Nothing is decoded before the signature holds."""
        if len(token) > MAX_TOKEN:
            raise UnsubscribeTokenError("unsubscribe token too long")
        version, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if version != _VERSION or not _B64.fullmatch(body) or not _B64.fullmatch(mac):
            raise UnsubscribeTokenError("not an unsubscribe token")
        signed = f"{version}.{body}"
        try:
            given = _unb64(mac)
        except (ValueError, binascii.Error):
            raise UnsubscribeTokenError("not an unsubscribe token") from None
        if _b64(given) != mac or not any(
            hmac.compare_digest(self._mac(key, signed), given) for key in self._keys
        ):
            raise UnsubscribeTokenError("the unsubscribe token's signature does not match")
        try:
            address, stream, tracking_id, expires = json.loads(_unb64(body))
        except (ValueError, TypeError, binascii.Error):  # signed by us: cannot happen
            raise UnsubscribeTokenError("unreadable unsubscribe token") from None
        moment = (now or self._now()).timestamp()
        if not isinstance(expires, int) or moment >= expires:
            raise UnsubscribeTokenError("the unsubscribe token has expired")
        return UnsubscribeRequest(
            address=str(address),
            stream=str(stream),
            tracking_id=None if tracking_id is None else str(tracking_id),
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    # ------------------------------------------------------------------ headers

    def applies(self, stream: str | None) -> bool:
        """Whether a send in ``stream`` carries the headers."""
        return stream is not None and stream in self.streams

    def url(self, token: str) -> str:
        return f"{self.public_url}/u/{token}"

    def headers(self, address: str, stream: str, tracking_id: str | None = None) -> dict[str, str]:
        """The two headers of RFC 8058 for one recipient (and a ``mailto:`` if set)."""
        link = f"<{self.url(self.token(address, stream, tracking_id))}>"
        if self.mailto:
            link += f", <mailto:{self.mailto}?subject=unsubscribe>"
        return {"List-Unsubscribe": link, "List-Unsubscribe-Post": ONE_CLICK_BODY}
