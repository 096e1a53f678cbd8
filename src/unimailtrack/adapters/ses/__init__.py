"""Amazon SES: send through the SES v2 API, read SES events as Amazon SNS delivers them.

The rooms: :mod:`.send` builds and signs ``SendEmail`` requests and reads the answers (SES's
error table), :mod:`.events` holds SES's event vocabulary and maps it, :mod:`.signing` verifies
SNS messages (and signs them for tests and the emulator), :mod:`.suppressions` reads and writes
the account's suppression list. This module is the adapter: its constructor and DSN, the AWS
credentials it resolves once, and the confirmation of SNS subscriptions.

Building the requests resolves credentials, which may block on STS or the instance metadata
service, so the async path builds them in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import httpx

from unimailtrack.adapters.base import (
    Adapter,
    Call,
    PushCall,
    Recipient,
    RemoteSuppression,
    SuppressionPage,
    signature_failure,
    webhook_log,
)
from unimailtrack.adapters.ses import events, send, signing
from unimailtrack.adapters.ses.events import (
    EVENTS,
    bounce_kind,
    parse_body,
    preference_change,
    ses_events,
)
from unimailtrack.adapters.ses.send import CATEGORY_TAG, SEND_PATH, TAG_PREFIX, sanitize_tag
from unimailtrack.adapters.ses.signing import CertificateLoader, SnsSigner, SnsVerifier
from unimailtrack.errors import ConfigurationError, PayloadError, SignatureCause
from unimailtrack.model import Email, EmailEvent, EventType, RecipientResult

if TYPE_CHECKING:
    import boto3

    from unimailtrack.config import Dsn

__all__ = [
    "CATEGORY_TAG",
    "EVENTS",
    "SEND_PATH",
    "TAG_PREFIX",
    "SESAdapter",
    "SnsSigner",
    "bounce_kind",
    "parse_body",
    "preference_change",
    "sanitize_tag",
    "ses_events",
]

PROVIDER: Final = "ses"


class SESAdapter(Adapter):
    """Amazon SES (contract): SES v2 ``SendEmail`` over SigV4, SNS-verified events.

    Credentials come from ``access_key_id`` / ``secret_access_key`` (and ``session_token``), a
    ``boto3_session``, a ``profile``, or else the standard AWS chain; the region from
    ``region`` or that session. ``configuration_set`` names the SES configuration set whose
    event destination publishes to SNS (an ``X-SES-CONFIGURATION-SET`` header picks another per
    e-mail). ``send_rate`` caps requests started per second (SES's maximum send rate).

    Webhooks: ``allowed_topic_arns`` restricts which SNS topics are believed (and is required to
    confirm subscriptions); ``certificate_loader(url) -> PEM`` replaces the HTTPS fetch of the
    signing certificate and is only called for URLs on an SNS host. ``trusted_certificate_urls``
    trusts exact extra certificate URLs: for a local emulator only. ``allow_raw_delivery``
    accepts unsigned SES events posted without the SNS envelope.
    """

    name: ClassVar[str] = PROVIDER
    dsn_options: ClassVar[frozenset[str]] = frozenset(
        {
            "region",
            "configuration_set",
            "topic_arns",
            "profile",
            "session_token",
            "endpoint_url",
            "send_rate",
            "allow_raw_delivery",
            "trusted_certificate_urls",
        }
    )

    def __init__(
        self,
        *,
        region: str | None = None,
        configuration_set: str | None = None,
        allowed_topic_arns: str | Iterable[str] | None = None,
        certificate_loader: CertificateLoader | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        boto3_session: boto3.Session | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        trusted_certificate_urls: Iterable[str] = (),
        allow_raw_delivery: bool = False,
        send_rate: float | None = None,
        max_message_age: timedelta | None = signing.DEFAULT_MAX_AGE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigurationError(
                "SES needs both access_key_id and secret_access_key, or neither"
            )
        if boto3_session is not None and (access_key_id is not None or profile is not None):
            raise ConfigurationError("give SES a boto3_session, or keys, or a profile: not several")
        self.region = region
        self.configuration_set = configuration_set
        self.allowed_topic_arns = signing.topic_set(allowed_topic_arns)
        self.endpoint_url = endpoint_url
        self._keys = (access_key_id, secret_access_key, session_token)
        self._session = boto3_session
        self._profile = profile
        self._signer: send.AwsSigner | None = None
        self._signer_lock = threading.Lock()
        self._pacer = send.Pacer(send_rate)
        trusted = tuple(trusted_certificate_urls)
        if trusted:
            webhook_log.warning(
                "ses: trusting SNS signing certificates from %s although they are not on SNS "
                "hosts; this is for a local emulator only",
                ", ".join(trusted),
            )
        self._verifier = SnsVerifier(
            provider=PROVIDER,
            allowed_topic_arns=self.allowed_topic_arns,
            certificate_loader=certificate_loader,
            trusted_urls=trusted,
            allow_raw_delivery=allow_raw_delivery,
            max_age=max_message_age,
        )

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, env: Mapping[str, str] | None = None) -> Self:
        """``ses://ACCESS_KEY:SECRET@default?region=eu-west-1&configuration_set=X&topic_arns=A,B``
        or ``ses://default?region=...`` for the AWS credential chain. Without ``region`` the
        chain's region (``AWS_REGION``, the profile) applies; without ``topic_arns``,
        ``UNIMAILTRACK_SES_TOPIC_ARNS``."""
        environ = env or {}
        if dsn.host != "default":
            raise ConfigurationError(
                f"an SES DSN names no host (use ?endpoint_url= for another endpoint): "
                f"{dsn.redacted()}"
            )
        if (dsn.user is None) != (dsn.password is None):
            raise ConfigurationError(
                f"an SES DSN needs ACCESS_KEY:SECRET (URL-encoded) or no credentials at all: "
                f"{dsn.redacted()}"
            )
        topics = dsn.list_option("topic_arns") or tuple(
            t.strip()
            for t in environ.get("UNIMAILTRACK_SES_TOPIC_ARNS", "").split(",")
            if t.strip()
        )
        return cls(
            region=dsn.option("region") or environ.get("AWS_REGION") or None,
            configuration_set=dsn.option("configuration_set"),
            allowed_topic_arns=topics or None,
            access_key_id=dsn.user,
            secret_access_key=dsn.password,
            session_token=dsn.option("session_token"),
            profile=dsn.option("profile"),
            endpoint_url=dsn.option("endpoint_url"),
            send_rate=dsn.float_option("send_rate") if "send_rate" in dsn.options else None,
            allow_raw_delivery=(
                dsn.bool_option("allow_raw_delivery")
                if "allow_raw_delivery" in dsn.options
                else False
            ),
            trusted_certificate_urls=dsn.list_option("trusted_certificate_urls"),
            **cls.common_options(dsn),
        )

    # ------------------------------------------------------------------ AWS

    def _aws_signer(self) -> send.AwsSigner:
        """Credentials, region and endpoint, resolved once (boto3 is imported here)."""
        with self._signer_lock:
            if self._signer is None:
                self._signer = self._resolve()
            return self._signer

    def _resolve(self) -> send.AwsSigner:
        return send.resolve_signer(
            keys=self._keys,
            session=self._session,
            profile=self._profile,
            region=self.region,
            endpoint_url=self.endpoint_url,
        )

    # ------------------------------------------------------------------ sending

    def build_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """One signed SES v2 ``SendEmail`` per recipient, each with its own tracking tag."""
        return send.build_calls(
            email,
            recipients,
            signer=self._aws_signer(),
            configuration_set=self.configuration_set,
        )

    async def abuild_calls(self, email: Email, recipients: Sequence[Recipient]) -> list[Call]:
        """``build_calls`` in a worker thread: resolving or refreshing AWS credentials may
        block on STS or the instance metadata service."""
        return await asyncio.to_thread(self.build_calls, email, recipients)

    def _resign(self, call: Call) -> Call:
        return replace(call, request=self._aws_signer().sign(call.request.content))

    def _run(self, call: Call) -> list[RecipientResult]:
        wait = self._pacer.reserve()
        if wait:
            time.sleep(wait)
        if send.stale(call.request):
            call = self._resign(call)
        return super()._run(call)

    async def _arun(self, call: Call) -> list[RecipientResult]:
        wait = self._pacer.reserve()
        if wait:
            await asyncio.sleep(wait)
        if send.stale(call.request):
            call = await asyncio.to_thread(self._resign, call)
        return await super()._arun(call)

    # ------------------------------------------------------------------ webhooks

    # Suppression list (.suppressions holds the wire format).

    def suppression_page_request(self, cursor: str | None) -> httpx.Request:
        from unimailtrack.adapters.ses import suppressions as lists

        signer = self._aws_signer()
        return lists.page_request(signer.endpoint, signer.sign_request, cursor)

    async def asuppression_page_request(self, cursor: str | None) -> httpx.Request:
        return await asyncio.to_thread(self.suppression_page_request, cursor)

    def read_suppression_page(
        self, cursor: str | None, response: httpx.Response
    ) -> SuppressionPage:
        from unimailtrack.adapters.ses import suppressions as lists

        return lists.read_page(cursor, response)

    def suppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        from unimailtrack.adapters.ses import suppressions as lists

        signer = self._aws_signer()
        return lists.push_calls(signer.endpoint, signer.sign_request, entries)

    async def asuppression_push_calls(
        self, entries: Sequence[RemoteSuppression]
    ) -> tuple[list[PushCall], list[tuple[RemoteSuppression, str]]]:
        return await asyncio.to_thread(self.suppression_push_calls, entries)

    @classmethod
    def list_change(cls, provider_event: str, type: EventType) -> str | None:
        """A subscription event is the contact list itself changing."""
        if provider_event != "Subscription":
            return None
        return {EventType.UNSUBSCRIBED: "added", EventType.RESUBSCRIBED: "lifted"}.get(type)

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> None:
        """Raise ``SignatureError`` unless ``body`` is a message Amazon SNS signed for an
        allowed topic, fresh, and consistent with its headers (contract)."""
        if self._verification_disabled():
            return
        self._verifier.verify(body, headers, now=now)

    def _confirmation_request(
        self, body: bytes, headers: Mapping[str, str], now: datetime | None
    ) -> httpx.Request:
        if self.allowed_topic_arns is None:
            raise ConfigurationError(
                "confirming SNS subscriptions needs allowed_topic_arns (?topic_arns= in the DSN): "
                "otherwise anyone's topic could subscribe this endpoint"
            )
        envelope = self._verifier.verify(body, headers, now=now)
        if envelope is None:
            raise signature_failure(
                PROVIDER,
                "a raw delivery cannot confirm a subscription",
                SignatureCause.MISSING_HEADER,
            )
        if envelope.get("Type") != signing.SUBSCRIPTION_CONFIRMATION:
            raise PayloadError(
                f"not an SNS subscription confirmation (Type={envelope.get('Type')!r})",
                provider=PROVIDER,
            )
        url = envelope.get("SubscribeURL")
        if not isinstance(url, str) or not signing.subscribe_url_ok(url, envelope):
            raise signature_failure(
                PROVIDER,
                f"SubscribeURL {url!r} does not confirm this topic on its SNS host",
                SignatureCause.UNTRUSTED_SOURCE,
            )
        return httpx.Request("GET", url)

    def confirm_subscription(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> str:
        """Verify an SNS ``SubscriptionConfirmation`` and confirm it by GETting its
        ``SubscribeURL`` (only an SNS URL in the topic's own region); return the subscription
        ARN. The signature is checked even when ``verify_webhooks`` is off."""
        request = self._confirmation_request(body, headers, now)
        return signing.confirmed(self.transport.send(request))

    async def aconfirm_subscription(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> str:
        """The async twin of ``confirm_subscription`` (the certificate fetch runs in a worker
        thread)."""
        request = await asyncio.to_thread(self._confirmation_request, body, headers, now)
        return signing.confirmed(await self.async_transport.send(request))

    @classmethod
    def parse_webhook_body(
        cls, body: bytes, headers: Mapping[str, str] | None = None
    ) -> list[EmailEvent]:
        """SNS-enveloped SES events (or raw deliveries) as canonical events, one per recipient;
        SNS control messages parse to ``[]``. Raises only ``PayloadError``."""
        return events.parse_body(body, headers)

    def __repr__(self) -> str:
        return f"<SESAdapter region={self.region!r} configuration_set={self.configuration_set!r}>"
