"""Postmark: ``POST /email`` and ``/email/batch``, and webhooks protected by credentials.

The rooms: :mod:`.send` builds requests and reads answers (Postmark's error table),
:mod:`.events` holds Postmark's vocabulary and maps it, :mod:`.signing` checks the credentials a
webhook carries (Postmark signs nothing), :mod:`.suppressions` reads and writes the message
stream's suppression list. This module is the adapter: its constructor and DSN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx

from unimailtrack._version import __version__
from unimailtrack.adapters._credentials import CREDENTIAL_OPTIONS, credential_options
from unimailtrack.adapters.base import (
    Adapter,
    Call,
    PushCall,
    Recipient,
    RemoteSuppression,
    SuppressionPage,
)
from unimailtrack.adapters.postmark import events, send, signing
from unimailtrack.adapters.postmark.signing import SECRET_ENV, PostmarkWebhookSigner
from unimailtrack.errors import ConfigurationError
from unimailtrack.model import Email, EmailEvent, EventType

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = ["SECRET_ENV", "PostmarkAdapter", "PostmarkWebhookSigner"]

PROVIDER: Final = "postmark"


class PostmarkAdapter(Adapter):
    """Send through Postmark and read its webhooks (contract).

    ``server_token``: the server's API token (may be omitted by a webhook-only application).
    ``webhook_secrets``: the credentials Postmark's webhook requests carry, ``"user:password"``
    (Basic, in the webhook URL) or a bare token (a ``Bearer`` header); several while rotating.
    ``allowed_networks``, ``trusted_proxies`` and ``forwarded_header``: an optional network
    allow-list (see :mod:`unimailtrack.webhook_auth`). ``message_stream``: the Postmark message
    stream to send through (``outbound`` by default). ``base_url`` replaces the API host (a
    local emulator). The other keyword options are the base adapter's.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = CREDENTIAL_OPTIONS | {"message_stream", "base_url"}

    def __init__(
        self,
        server_token: str | None = None,
        *,
        webhook_secrets: str | Iterable[str] = (),
        allowed_networks: str | Iterable[str] = (),
        trusted_proxies: str | Iterable[str] = (),
        forwarded_header: str = "x-forwarded-for",
        message_stream: str = "outbound",
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not message_stream:
            raise ConfigurationError("a Postmark message stream needs a name")
        self.base_url = (base_url or send.API_BASE_URL).rstrip("/")
        self.message_stream = message_stream
        self._credentials = signing.verifier(
            webhook_secrets,
            allowed_networks=allowed_networks,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
        )
        host = httpx.URL(self.base_url).netloc.decode("ascii")
        self._headers = (
            httpx.Headers(
                {
                    "Host": host,
                    "X-Postmark-Server-Token": server_token,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": f"unimailtrack/{__version__}",
                }
            )
            if server_token
            else None
        )

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """``postmark://SERVER_TOKEN@default?webhook_secret=user:password&message_stream=...``;
        ``UNIMAILTRACK_POSTMARK_WEBHOOK_SECRET`` in ``env`` adds comma-separated secrets."""
        if dsn.host != "default":
            raise ConfigurationError(
                f"a Postmark DSN's host is 'default' (use ?base_url= for another host): "
                f"{dsn.redacted()}"
            )
        if dsn.password is not None:
            raise ConfigurationError(
                f"a Postmark DSN takes only a server token, postmark://SERVER_TOKEN@default: "
                f"{dsn.redacted()}"
            )
        options = cls.common_options(dsn)
        options.update(credential_options(dsn, env, SECRET_ENV))
        for name in ("message_stream", "base_url"):
            if name in dsn.options:
                options[name] = dsn.options[name]
        return cls(dsn.user or None, **options)

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One ``/email`` request for one recipient, else one ``/email/batch`` request per 500."""
        if self._headers is None:
            raise ConfigurationError(
                "sending through Postmark needs a server token: postmark://SERVER_TOKEN@default",
                provider=PROVIDER,
            )
        return send.build_calls(
            email,
            recipients,
            base_url=self.base_url,
            headers=self._headers,
            message_stream=self.message_stream,
        )

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless the request carries a configured credential (and
        comes from an allowed network, when some are configured) (contract)."""
        del body, now  # nothing is signed and nothing is dated
        if self._verification_disabled():
            return
        self._credentials.verify(headers)

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """Map a Postmark webhook body onto canonical events (pure; raises only
        ``PayloadError``)."""
        return events.parse_events(body)

    # ------------------------------------------------------------------ suppression list

    def _api_headers(self) -> httpx.Headers:
        if self._headers is None:
            raise ConfigurationError(
                "Postmark's suppression list needs a server token: postmark://SERVER_TOKEN@default",
                provider=PROVIDER,
            )
        return self._headers

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        """The message stream's suppression dump, one ``SuppressionReason`` a page."""
        from unimailtrack.adapters.postmark import suppressions

        return suppressions.page_request(
            self.base_url, self.message_stream, self._api_headers(), cursor
        )

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters.postmark import suppressions

        return suppressions.read_page(self.message_stream, cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        """``POST`` the entries into the message stream's list, 50 a request."""
        from unimailtrack.adapters.postmark import suppressions

        return suppressions.push_calls(
            self.base_url, self.message_stream, self._api_headers(), entries
        )

    @classmethod
    def list_change(cls, provider_event: str, type: EventType) -> str | None:
        """A ``SubscriptionChange`` is Postmark's list itself changing: an address added
        (``SuppressSending: true``) or reactivated (``false``)."""
        if provider_event != "SubscriptionChange":
            return None
        return {EventType.UNSUBSCRIBED: "added", EventType.RESUBSCRIBED: "lifted"}.get(type)

    def __repr__(self) -> str:
        return f"<PostmarkAdapter stream={self.message_stream!r} {self._credentials!r}>"
