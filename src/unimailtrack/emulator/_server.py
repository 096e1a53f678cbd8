"""The emulator's server: one local HTTP port for every provider, and a webhook dispatcher.

The HTTP side is the standard library's threading server, bound to 127.0.0.1 only: the
emulator needs nothing the core does not already install, so it runs in any test suite. Each
request goes to the provider module whose send endpoint it names; the rate limit is counted
per provider in fixed windows.

The dispatcher is one thread with a queue ordered by due time. Every step of every accepted
copy's scenario is queued when the send is answered, ``delay`` seconds after the step before
it (the first ``delay`` seconds after the send). ``duplicate`` queues some steps twice;
``reorder`` holds steps back by a random time up to the length of their scenario and breaks
ties at random, so later events overtake earlier ones. Whatever is due is rendered, packed by
its provider (SendGrid batches, the others one event per request), signed, and posted to the
provider's webhook URL, which must be on this machine. A post that fails (no connection,
5xx, 429) is tried again a bounded number of times, shortly after; nothing loops for longer
than the options allow.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from unimailtrack.adapters.base import Adapter
from unimailtrack.adapters.sendgrid import SendGridWebhookSigner
from unimailtrack.adapters.ses.signing import topic_region
from unimailtrack.emulator import brevo as _brevo_api
from unimailtrack.emulator import mailgun as _mailgun_api
from unimailtrack.emulator import postmark as _postmark_api
from unimailtrack.emulator import sendgrid as _sendgrid_api
from unimailtrack.emulator import ses as _ses_api
from unimailtrack.emulator._model import (
    Answer,
    Incoming,
    ProviderEmulator,
    SentCopy,
    SuppressionLists,
)
from unimailtrack.emulator.brevo import BrevoEmulator
from unimailtrack.emulator.mailgun import MailgunEmulator
from unimailtrack.emulator.postmark import PostmarkEmulator
from unimailtrack.emulator.resend import ResendEmulator
from unimailtrack.emulator.scenarios import SCENARIOS
from unimailtrack.emulator.sendgrid import DEFAULT_BATCH_SIZE, SendGridEmulator
from unimailtrack.emulator.ses import DEFAULT_TOPIC_ARN, SESEmulator
from unimailtrack.errors import ConfigurationError

__all__ = ["PROVIDERS", "Delivery", "Emulator", "RateLimit"]

log = logging.getLogger("unimailtrack.emulator")

PROVIDERS: Final = ("sendgrid", "mailgun", "ses", "resend", "postmark", "brevo")
"""The providers the emulator imitates, in the order it lists them."""

# The shape of SNS's own certificate URLs: a hexadecimal name at the root of the host.
CERTIFICATE_PATH: Final = "/SimpleNotificationService-756e696d61696c747261636b2d656d75.pem"
MAX_REQUEST_BYTES: Final = 40 * 1024 * 1024
"""Larger than any provider takes (SendGrid's 30 MB is the largest), so each refuses first."""

_RETRY_PAUSE: Final = 0.1
_API_MODULES: Final[Mapping[str, Any]] = {
    "sendgrid": _sendgrid_api,
    "mailgun": _mailgun_api,
    "ses": _ses_api,
    "postmark": _postmark_api,
    "brevo": _brevo_api,
}
"""Each provider module's suppression-list API (``handles_api`` and ``answer_api``)."""
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` send requests per provider in each window of ``per`` seconds;
    the next is answered 429 with ``Retry-After``."""

    requests: int
    per: float = 1.0

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.per > 0:
            raise ConfigurationError("a rate limit needs at least one request per positive time")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request the emulator made: where, what, and how it was answered.

    ``url`` is None when no webhook URL is configured for the provider: the request is then
    only recorded, for a test to hand to its own receiver. ``status`` is the last answer's
    HTTP status (None when nothing answered), ``attempts`` how many posts it took.
    """

    provider: str
    url: str | None
    body: bytes
    headers: Mapping[str, str]
    status: int | None = None
    attempts: int = 0
    error: str | None = None


class _Window:
    """A fixed-window request counter."""

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._start = -math.inf
        self._count = 0
        self._lock = threading.Lock()

    def take(self, now: float) -> int | None:
        """None when a request may go now, else the whole seconds until it may."""
        with self._lock:
            if now - self._start >= self._limit.per:
                self._start, self._count = now, 0
            if self._count < self._limit.requests:
                self._count += 1
                return None
            return max(1, math.ceil(self._start + self._limit.per - now))


@dataclass(order=True, slots=True)
class _Pending:
    """One step of one copy's scenario, waiting to be posted."""

    due: float
    order: float
    seq: int
    copy: SentCopy = field(compare=False)
    index: int = field(compare=False)
    at: datetime = field(compare=False)


def _is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_targets(webhooks: str | Mapping[str, str] | None) -> dict[str, str]:
    """Each provider's webhook URL: a template with ``{provider}``, or a mapping. Only URLs on
    this machine are taken: the emulator never posts anywhere else."""
    if webhooks is None:
        return {}
    if isinstance(webhooks, str):
        if "{provider}" not in webhooks:
            raise ConfigurationError(
                "a webhook URL template needs {provider}, e.g. "
                "http://127.0.0.1:8000/webhooks/{provider}"
            )
        targets = {name: webhooks.format(provider=name) for name in PROVIDERS}
    else:
        unknown = sorted(set(webhooks) - set(PROVIDERS))
        if unknown:
            raise ConfigurationError(f"the emulator imitates no provider named {unknown}")
        targets = dict(webhooks)
    remote = sorted(url for url in targets.values() if not _is_loopback(url))
    if remote:
        raise ConfigurationError(
            f"the emulator posts webhooks only to this machine (127.0.0.1, ::1, localhost), "
            f"not to {', '.join(remote)}"
        )
    return targets


class _Dispatcher:
    """Times, renders, signs and posts every scenario step of every accepted copy."""

    def __init__(
        self,
        providers: Mapping[str, ProviderEmulator],
        targets: Mapping[str, str],
        *,
        delay: float,
        duplicate: float,
        reorder: bool,
        seed: int | None,
        attempts: int,
        timeout: float,
        record: Callable[[Delivery], None],
    ) -> None:
        self._providers = providers
        self._record = record
        self.targets: Mapping[str, str] = targets
        """Where each provider's events go; replaced whole, never changed in place."""
        self._delay = delay
        self._duplicate = duplicate
        self._reorder = reorder
        self._rng = random.Random(seed)
        self._attempts = attempts
        self._queue: list[_Pending] = []
        self._seq = itertools.count()
        self._accepting = 0
        self._posting = False
        self._closed = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self.history: list[tuple[str, dict[str, Any]]] = []
        """Every event rendered so far, by provider, posted or not: the events APIs read it."""
        self._history_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="unimailtrack-emulator-webhooks", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop posting; what has not been posted yet is dropped."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._client.close()

    @contextlib.contextmanager
    def accepting(self) -> Iterator[None]:
        """Marks a send request in progress, so that ``drain`` waits for its steps even when
        its answer reached the client before they were queued."""
        with self._changed:
            self._accepting += 1
        try:
            yield
        finally:
            with self._changed:
                self._accepting -= 1
                self._changed.notify_all()

    def schedule(self, copies: Sequence[SentCopy]) -> None:
        now = time.monotonic()
        with self._changed:
            if self._closed:
                return
            for copy in copies:
                self._plan(copy, now)
            self._changed.notify_all()

    def _plan(self, copy: SentCopy, now: float) -> None:
        steps = copy.steps
        span = len(steps) * self._delay
        for index in range(len(steps)):
            offset = (index + 1) * self._delay
            at = copy.accepted_at + timedelta(seconds=offset)
            times = 2 if self._rng.random() < self._duplicate else 1
            for _ in range(times):
                hold = self._rng.uniform(0.0, span) if self._reorder else 0.0
                order = self._rng.random() if self._reorder else 0.0
                pending = _Pending(now + offset + hold, order, next(self._seq), copy, index, at)
                heapq.heappush(self._queue, pending)

    def drain(self, timeout: float) -> None:
        with self._changed:
            idle = self._changed.wait_for(
                lambda: not (self._queue or self._posting or self._accepting), timeout
            )
            if not idle:
                raise TimeoutError(
                    f"{len(self._queue)} webhook event(s) still waiting after {timeout} s"
                )

    def _due(self) -> list[_Pending] | None:
        """The steps due now, waiting until there are some; None once closed."""
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                if self._queue and self._queue[0].due <= now:
                    due = []
                    while self._queue and self._queue[0].due <= now:
                        due.append(heapq.heappop(self._queue))
                    self._posting = True
                    return due
                self._changed.wait(self._queue[0].due - now if self._queue else None)
            return None

    def _run(self) -> None:
        while (due := self._due()) is not None:
            try:
                self._post(due)
            except Exception:  # one provider's bug must not end every later delivery
                log.exception("emulator: could not post webhook events")
            finally:
                with self._changed:
                    self._posting = False
                    self._changed.notify_all()

    def _post(self, due: Sequence[_Pending]) -> None:
        events: dict[str, list[dict[str, Any]]] = {}
        for pending in due:
            provider = self._providers[pending.copy.provider]
            event = provider.event(pending.copy, pending.index, pending.at)
            events.setdefault(provider.name, []).append(event)
            with self._history_lock:
                self.history.append((provider.name, event))
        for name, batch in events.items():
            for posting in self._providers[name].postings(batch):
                self._record(self._send(name, posting.body, posting.headers))

    def _send(self, name: str, body: bytes, headers: Mapping[str, str]) -> Delivery:
        url = self.targets.get(name)
        if url is None:
            return Delivery(name, None, body, headers)
        status: int | None = None
        error: str | None = None
        attempt = 0
        for attempt in range(1, self._attempts + 1):
            try:
                status, error = (
                    self._client.post(url, content=body, headers=headers).status_code,
                    None,
                )
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if status is not None and status < 500 and status != 429:
                break
            if attempt < self._attempts and self._stop.wait(_RETRY_PAUSE * attempt):
                break
        if status is not None and 200 <= status < 300:
            log.info("emulator: %s webhook to %s answered %s", name, url, status)
        else:  # loud: a receiver that refuses the emulator refuses the provider too
            log.warning(
                "emulator: %s webhook to %s was refused: %s after %d attempt(s)",
                name,
                url,
                status or error,
                attempt,
            )
        return Delivery(name, url, body, headers, status, attempt, error)

    def events(self, provider: str) -> list[dict[str, Any]]:
        """The events rendered for ``provider`` so far, oldest first."""
        with self._history_lock:
            return [event for name, event in self.history if name == provider]


class _Server(ThreadingHTTPServer):
    """The standard library's threading server, remembering its open connections so that
    closing the emulator also ends the keep-alive connections of its clients."""

    daemon_threads = True

    def __init__(self, emulator: Emulator, port: int) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def end_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "unimailtrack-emulator"
    timeout = 30  # an idle keep-alive connection ends by itself
    disable_nagle_algorithm = True  # the head and the body go out in separate writes
    server: _Server

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._write(Answer.json(411, {"message": "a Content-Length is required"}))
            return
        if int(length) > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._write(Answer.json(413, {"message": "the request is too large"}))
            return
        parts = urlsplit(self.path)
        request = Incoming(
            method=self.command,
            path=parts.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(int(length)),
            query=parts.query,
        )
        answer = self.server.emulator.serve_api(request)
        if answer is not None:
            self._write(answer)
            return
        self.server.emulator.serve_post(request, self._write)

    do_PUT = do_POST

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Incoming(
            method="GET", path=parts.path, headers=headers, body=b"", query=parts.query
        )
        answer = self.server.emulator.serve_api(request)
        self._write(answer or self.server.emulator.serve_get(parts.path, parts.query, headers))

    def do_HEAD(self) -> None:
        answer = self.server.emulator.serve_get(urlsplit(self.path).path)
        self._write(answer, head_only=True)

    def _write(self, answer: Answer, *, head_only: bool = False) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(answer.body)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: %s " + format, self.address_string(), *args)


class Emulator:
    """A local stand-in for SendGrid, Mailgun, Amazon SES, Resend, Postmark and Brevo (see
    docs/emulator.md).

    Use it as a context manager; ``url`` is where it listens (127.0.0.1 only, ``port=0`` for a
    free port). Point the real adapters at it with :meth:`dsn` or :meth:`adapter`.

    ``webhooks``: where to post each provider's events, a URL template with ``{provider}``
    (``http://127.0.0.1:8000/webhooks/{provider}``) or a mapping per provider; URLs must be on
    this machine; it can also be set later (:attr:`webhooks`), once the receiver runs. Without
    one, webhook requests are only recorded in :attr:`deliveries`.
    ``delay``: seconds from the send to a copy's first event, and between its events (0: all
    at once, as soon as the send is answered).
    ``duplicate``: the chance that an event is posted twice. ``reorder``: post events out of
    order. ``seed``: makes duplication and reordering repeatable.
    ``rate_limit``: answer 429 with ``Retry-After`` beyond it.
    ``api_key``: the only API key (Postmark: server token) accepted by every provider but SES
    (any key when None).
    ``aws_credentials``: access key id -> secret; when given, SES checks SigV4 signatures.
    ``sendgrid_private_key`` (PEM), ``mailgun_signing_key``, ``resend_webhook_secret``
    (``whsec_...``), ``postmark_webhook_secret`` and ``brevo_webhook_secret`` keep webhook keys
    across runs (fresh ones when None). ``sendgrid_batch_size``: events per SendGrid webhook
    request.
    ``webhook_attempts`` and ``webhook_timeout`` bound each webhook post.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        webhooks: str | Mapping[str, str] | None = None,
        delay: float = 0.0,
        duplicate: float = 0.0,
        reorder: bool = False,
        seed: int | None = None,
        rate_limit: RateLimit | None = None,
        api_key: str | None = None,
        aws_credentials: Mapping[str, str] | None = None,
        sendgrid_private_key: str | None = None,
        mailgun_signing_key: str | None = None,
        resend_webhook_secret: str | None = None,
        postmark_webhook_secret: str | None = None,
        brevo_webhook_secret: str | None = None,
        ses_topic_arn: str = DEFAULT_TOPIC_ARN,
        sendgrid_batch_size: int = DEFAULT_BATCH_SIZE,
        webhook_attempts: int = 3,
        webhook_timeout: float = 5.0,
    ) -> None:
        if delay < 0 or not 0.0 <= duplicate <= 1.0:
            raise ConfigurationError("delay must be >= 0 and duplicate between 0 and 1")
        if webhook_attempts < 1 or webhook_timeout <= 0:
            raise ConfigurationError("webhook_attempts must be >= 1 and webhook_timeout > 0")
        if topic_region(ses_topic_arn) is None:
            raise ConfigurationError(f"{ses_topic_arn!r} is not an SNS topic ARN")
        self._port = port
        self._targets = webhook_targets(webhooks)
        self._delay = delay
        self._duplicate = duplicate
        self._reorder = reorder
        self._seed = seed
        self._rate_limit = rate_limit
        self._webhook_attempts = webhook_attempts
        self._webhook_timeout = webhook_timeout
        self._aws_credentials = aws_credentials
        self._ses_topic_arn = ses_topic_arn
        self.sendgrid = SendGridEmulator(
            api_key=api_key,
            signer=SendGridWebhookSigner(sendgrid_private_key),
            batch_size=sendgrid_batch_size,
        )
        self.mailgun = MailgunEmulator(api_key=api_key, signing_key=mailgun_signing_key)
        self.resend = ResendEmulator(api_key=api_key, secret=resend_webhook_secret)
        self.postmark = PostmarkEmulator(
            server_token=api_key, webhook_secret=postmark_webhook_secret
        )
        self.brevo = BrevoEmulator(api_key=api_key, webhook_secret=brevo_webhook_secret)
        self._ses: SESEmulator | None = None
        self._providers: dict[str, ProviderEmulator] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dispatcher: _Dispatcher | None = None
        self._limits: dict[str, _Window] = {}
        self._sent: list[SentCopy] = []
        self._deliveries: list[Delivery] = []
        self._log_lock = threading.Lock()

    # ------------------------------------------------------------------ running

    def start(self) -> Emulator:
        """Bind 127.0.0.1 and start serving and posting."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = _Server(self, self._port)
        self._server = server
        self._ses = SESEmulator(
            certificate_url=self.url + CERTIFICATE_PATH,
            topic_arn=self._ses_topic_arn,
            credentials=self._aws_credentials,
        )
        self._providers = {
            "sendgrid": self.sendgrid,
            "mailgun": self.mailgun,
            "ses": self._ses,
            "resend": self.resend,
            "postmark": self.postmark,
            "brevo": self.brevo,
        }
        if self._rate_limit is not None:
            self._limits = {name: _Window(self._rate_limit) for name in PROVIDERS}
        self._dispatcher = _Dispatcher(
            self._providers,
            self._targets,
            delay=self._delay,
            duplicate=self._duplicate,
            reorder=self._reorder,
            seed=self._seed,
            attempts=self._webhook_attempts,
            timeout=self._webhook_timeout,
            record=self._record,
        )
        self._dispatcher.start()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="unimailtrack-emulator",
            daemon=True,
        )
        self._thread.start()
        log.info("emulator: listening on %s", self.url)
        return self

    def close(self) -> None:
        """Stop serving and posting; events not yet posted are dropped."""
        server, thread, dispatcher = self._server, self._thread, self._dispatcher
        if server is None:
            return
        server.shutdown()
        server.end_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        if dispatcher is not None:
            dispatcher.close()
        self._server = self._thread = self._dispatcher = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every event of every send so far has been posted (``TimeoutError`` if
        that takes longer than ``timeout`` seconds)."""
        self._running_dispatcher().drain(timeout)

    # ------------------------------------------------------------------ what it knows

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base URL every provider's API is served at."""
        if self._server is None:
            raise RuntimeError("the emulator is not running: use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def webhooks(self) -> dict[str, str]:
        """Each provider's webhook URL. Set it, like a provider console's webhook setting, to
        a URL template with ``{provider}``, a mapping per provider, or None to only record
        the requests; events posted from then on go there."""
        return dict(self._targets)

    @webhooks.setter
    def webhooks(self, webhooks: str | Mapping[str, str] | None) -> None:
        self._targets = webhook_targets(webhooks)
        if self._dispatcher is not None:
            self._dispatcher.targets = self._targets

    @property
    def ses(self) -> SESEmulator:
        """The SES part, which exists once the emulator runs (its certificate URL is on the
        emulator's own port)."""
        if self._ses is None:
            raise RuntimeError("the emulator is not running: use it as a context manager")
        return self._ses

    @property
    def sent(self) -> list[SentCopy]:
        """Every copy accepted so far, in order."""
        with self._log_lock:
            return list(self._sent)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook request made (or recorded) so far, in order."""
        with self._log_lock:
            return list(self._deliveries)

    def _record(self, delivery: Delivery) -> None:
        with self._log_lock:
            self._deliveries.append(delivery)

    def dsn(self, provider: str) -> str:
        """A DSN that sends through ``provider``'s real adapter to this emulator and verifies
        its webhooks; the same code that runs against the real provider runs against it."""
        return self._provider(provider).dsn(self.url)

    def receiver_dsn(self) -> str:
        """One DSN naming every provider's adapter, for a webhook receiver that trusts every
        provider's webhooks from this emulator (``unimailtrack serve --dsn``)."""
        return f"failover({' '.join(self.dsn(name) for name in PROVIDERS)})"

    def adapter(self, provider: str, **options: Any) -> Adapter:
        """``provider``'s real adapter pointed at this emulator (``options`` go to its
        constructor, e.g. ``retry=RetryPolicy.none()``)."""
        return self._provider(provider).adapter(self.url, **options)

    def settings(self) -> dict[str, str]:
        """What a receiver needs to trust this emulator's webhooks, by name."""
        return {
            "url": self.url,
            "sendgrid_webhook_key": self.sendgrid.public_key,
            "mailgun_signing_key": self.mailgun.signing_key,
            "ses_topic_arn": self.ses.topic_arn,
            "ses_certificate_url": self.ses.certificate_url,
            "resend_webhook_secret": self.resend.secret,
            "postmark_webhook_secret": self.postmark.webhook_secret,
            "brevo_webhook_secret": self.brevo.webhook_secret,
            **{f"{name}_dsn": self.dsn(name) for name in PROVIDERS},
            "receiver_dsn": self.receiver_dsn(),
        }

    def _provider(self, name: str) -> ProviderEmulator:
        if name not in PROVIDERS:
            raise ConfigurationError(f"the emulator imitates {', '.join(PROVIDERS)}, not {name!r}")
        if not self._providers:
            raise RuntimeError("the emulator is not running: use it as a context manager")
        return self._providers[name]

    def _running_dispatcher(self) -> _Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("the emulator is not running: use it as a context manager")
        return self._dispatcher

    # ------------------------------------------------------------------ serving

    def serve_post(self, request: Incoming, write: Callable[[Answer], None]) -> None:
        """Answer one POST with ``write(answer)``, then queue the accepted copies' events."""
        dispatcher = self._running_dispatcher()
        with dispatcher.accepting():
            answer, copies = self._answer(request)
            with self._log_lock:
                self._sent.extend(copies)
            write(answer)
            dispatcher.schedule(copies)
        if copies:
            log.info(
                "emulator: %s accepted a send to %d recipient(s) (%s)",
                copies[0].provider,
                len(copies),
                ", ".join(sorted({c.scenario.name for c in copies})),
            )
        elif answer.status >= 300:
            log.warning("emulator: refused %s with %d", request.path, answer.status)

    def _answer(self, request: Incoming) -> tuple[Answer, list[SentCopy]]:
        provider = next((p for p in self._providers.values() if p.handles(request.path)), None)
        if provider is None:
            return Answer.json(404, {"message": f"nothing is served at {request.path}"}), []
        window = self._limits.get(provider.name)
        wait = window.take(time.monotonic()) if window is not None else None
        if wait is not None:
            answer = provider.throttled(wait)
            headers = {**answer.headers, "Retry-After": str(wait)}
            return Answer(answer.status, answer.body, headers), []
        return provider.accept(request, datetime.now(UTC))

    def suppressions(self, provider: str) -> SuppressionLists:
        """The provider's own suppression lists, as the emulator keeps them (to seed them,
        read what a push wrote, or make reads fail half-way)."""
        found: SuppressionLists = getattr(self._provider(provider), "suppressions")  # noqa: B009
        return found

    def serve_api(self, request: Incoming) -> Answer | None:
        """A provider's suppression-list API, or None when ``request`` is not one. The rate
        limit counts these requests with the provider's sends."""
        for name, module in _API_MODULES.items():
            if name in self._providers and module.handles_api(request.path):
                window = self._limits.get(name)
                wait = window.take(time.monotonic()) if window is not None else None
                provider = self._providers[name]
                if wait is not None:
                    answer = provider.throttled(wait)
                    return Answer(
                        answer.status, answer.body, {**answer.headers, "Retry-After": str(wait)}
                    )
                now = datetime.now(UTC)
                api: Answer
                if name == "mailgun":
                    api = module.answer_api(provider, request, now, self.url)
                else:
                    api = module.answer_api(provider, request, now)
                return api
        return None

    def serve_get(
        self, path: str, query: str = "", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """The SNS signing certificate, a provider's events API (Mailgun's events, SendGrid's
        Email Activity), or a description of the emulator at ``/``."""
        for provider in self._providers.values():
            read = getattr(provider, "events_api", None)
            if read is not None and self._dispatcher is not None:
                answer = read(
                    path, query, headers or {}, self._dispatcher.events(provider.name), self.url
                )
                if isinstance(answer, Answer):
                    return answer
        if path == CERTIFICATE_PATH:
            return Answer(200, self.ses.certificate_pem, {"Content-Type": "application/x-pem-file"})
        if path == "/":
            description = {
                "emulator": "unimailtrack",
                "providers": {name: self.dsn(name) for name in PROVIDERS},
                "scenarios": {name: s.summary for name, s in SCENARIOS.items()},
            }
            return Answer(
                200,
                json.dumps(description, indent=2).encode(),
                {"Content-Type": "application/json"},
            )
        return Answer.json(404, {"message": f"nothing is served at {path}"})
