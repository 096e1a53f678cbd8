"""Brevo: ``POST /v3/smtp/email`` (message versions for a bulk send), and webhooks protected
by credentials.

The rooms: :mod:`.send` builds requests and reads answers (Brevo's error table), :mod:`.events`
holds Brevo's vocabulary and maps it, :mod:`.signing` checks the credentials a webhook carries
(Brevo signs nothing), :mod:`.suppressions` reads the blocked transactional contacts. This
module is the adapter: its constructor and its DSN.
"""

from __future__ import annotations

import logging
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
from unimailtrack.adapters.brevo import events, send, signing
from unimailtrack.adapters.brevo.signing import SECRET_ENV, BrevoWebhookSigner
from unimailtrack.errors import ConfigurationError, NotSupported
from unimailtrack.model import Email, EmailEvent

if TYPE_CHECKING:
    from unimailtrack.config import Dsn

__all__ = ["SECRET_ENV", "BrevoAdapter", "BrevoWebhookSigner"]

PROVIDER: Final = "brevo"
_log = logging.getLogger("unimailtrack.send")


class BrevoAdapter(Adapter):
    """Send through Brevo's transactional API and read its webhooks (contract).

    ``api_key``: a Brevo API key (may be omitted by a webhook-only application).
    ``webhook_secrets``: the credentials Brevo's webhook requests carry, ``"user:password"``
    (Basic, in the webhook URL) or a bare token (the webhook's bearer ``auth``); several while
    rotating. ``allowed_networks``, ``trusted_proxies`` and ``forwarded_header``: an optional
    network allow-list (see :mod:`unimailtrack.webhook_auth`). ``base_url`` replaces the API
    host (a local emulator). The other keyword options are the base adapter's.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = CREDENTIAL_OPTIONS | {"base_url"}

    def __init__(
        self,
        api_key: str | None = None,
        *,
        webhook_secrets: str | Iterable[str] = (),
        allowed_networks: str | Iterable[str] = (),
        trusted_proxies: str | Iterable[str] = (),
        forwarded_header: str = "x-forwarded-for",
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.base_url = (base_url or send.API_BASE_URL).rstrip("/")
        self._credentials = signing.verifier(
            webhook_secrets,
            allowed_networks=allowed_networks,
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
        )
        self._warned_tracking = False
        host = httpx.URL(self.base_url).netloc.decode("ascii")
        self._headers = (
            httpx.Headers(
                {
                    "Host": host,
                    "api-key": api_key,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": f"unimailtrack/{__version__}",
                }
            )
            if api_key
            else None
        )

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """``brevo://API_KEY@default?webhook_secret=TOKEN``; ``UNIMAILTRACK_BREVO_WEBHOOK_SECRET``
        in ``env`` adds comma-separated secrets."""
        if dsn.host != "default":
            raise ConfigurationError(
                f"a Brevo DSN's host is 'default' (use ?base_url= for another host): "
                f"{dsn.redacted()}"
            )
        if dsn.password is not None:
            raise ConfigurationError(
                f"a Brevo DSN takes only an API key, brevo://API_KEY@default: {dsn.redacted()}"
            )
        options = cls.common_options(dsn)
        options.update(credential_options(dsn, env, SECRET_ENV))
        if "base_url" in dsn.options:
            options["base_url"] = dsn.options["base_url"]
        return cls(dsn.user or None, **options)

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One request per 1,000 recipients, one message version each."""
        if self._headers is None:
            raise ConfigurationError(
                "sending through Brevo needs an API key: brevo://API_KEY@default",
                provider=PROVIDER,
            )
        if (email.track_opens or email.track_clicks) and not self._warned_tracking:
            self._warned_tracking = True
            _log.warning(
                "brevo: open and click tracking are settings of the Brevo account; "
                "track_opens/track_clicks on an e-mail cannot turn them on or off"
            )
        return send.build_calls(email, recipients, base_url=self.base_url, headers=self._headers)

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
        """Map a Brevo webhook body (one event or a batch) onto canonical events (pure; raises
        only ``PayloadError``)."""
        return events.parse_events(body)

    # ------------------------------------------------------------------ suppression list

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        """A page of the blocked transactional contacts (100 a page, oldest first)."""
        from unimailtrack.adapters.brevo import suppressions

        if self._headers is None:
            raise ConfigurationError(
                "Brevo's blocked contacts need an API key: brevo://API_KEY@default",
                provider=PROVIDER,
            )
        return suppressions.page_request(self.base_url, self._headers, cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters.brevo import suppressions

        return suppressions.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        """Refused: Brevo's API reads blocked transactional contacts and unblocks them, and
        documents no request that blocks one."""
        raise NotSupported(
            PROVIDER,
            "writing its blocked transactional contacts (its API only reads and unblocks them)",
        )

    def __repr__(self) -> str:
        return f"<BrevoAdapter {self._credentials!r}>"
