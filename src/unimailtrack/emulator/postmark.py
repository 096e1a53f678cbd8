"""Postmark, imitated: ``/email`` and ``/email/batch`` in, one webhook per event out.

Requests take ``X-Postmark-Server-Token``; a missing or wrong token is answered 401 with
``{"ErrorCode": 10, ...}``. A message Postmark would refuse gets ``ErrorCode`` 300 (422 on its
own, or that message's entry in a batch's 200 answer, where every message has its own code). An
address on Postmark's inactive list (the ``dropped`` scenario) is refused at once with
``ErrorCode`` 406, as Postmark does, and never sent. Accepted messages answer ``ErrorCode`` 0
and a ``MessageID``.

Postmark posts nothing when it queues a message; every later step becomes its own record:
``Delivery``, ``Bounce`` (``Transient`` for a deferral, ``HardBounce``, ``SoftBounce`` or
``Blocked`` for a final failure), ``SpamComplaint``, ``Open``, ``Click``, ``SubscriptionChange``,
with the message's ``Metadata`` and ``Tag``. Each is one request carrying the webhook's
credentials in ``Authorization``, as Postmark sends the user and password of the webhook URL.

Each message stream's suppression list is served as Postmark's Suppressions API does (see
:func:`answer_api`); an address on the list of a message's stream is refused with 406 as well.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.utils import getaddresses
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, quote, unquote

from unimailtrack.adapters.postmark import PostmarkAdapter, PostmarkWebhookSigner
from unimailtrack.adapters.postmark.send import MAX_BATCH
from unimailtrack.adapters.postmark.suppressions import PUSH_SIZE, REASONS
from unimailtrack.emulator._model import (
    Answer,
    Incoming,
    Posting,
    SentCopy,
    SuppressionLists,
    iso_time,
    stable_token,
)
from unimailtrack.emulator.scenarios import CLICKED_URL, Step, StepKind, scenario_for
from unimailtrack.errors import InvalidAddress
from unimailtrack.model import Address, BounceKind

__all__ = ["PostmarkEmulator"]

_SINGLE: Final = "/email"
_BATCH: Final = "/email/batch"
_SERVER_ID: Final = 23
_READER_IP: Final = "198.51.100.7"

_BOUNCE_TYPES: Final[Mapping[BounceKind | None, tuple[str, int, str]]] = {
    BounceKind.HARD: (
        "HardBounce",
        1,
        "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    ),
    BounceKind.SOFT: ("SoftBounce", 4096, "Unable to temporarily deliver this email."),
    BounceKind.BLOCK: ("Blocked", 100006, "Blocked from this ISP due to content or blacklisting."),
}


def _error(status: int, code: int, message: str) -> Answer:
    return Answer.json(status, {"ErrorCode": code, "Message": message})


def _delivery(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return {"RecordType": "Delivery", **common, "DeliveredAt": at, "Details": str(step.smtp)}


def _bounce(
    step: Step, common: dict[str, Any], at: str, kind: tuple[str, int, str]
) -> dict[str, Any]:
    name, code, description = kind
    return {
        "RecordType": "Bounce",
        "Type": name,
        "TypeCode": code,
        "Name": name,
        **{k: v for k, v in common.items() if k != "Recipient"},
        "Email": common["Recipient"],
        "BouncedAt": at,
        "Description": description,
        "Details": str(step.smtp),
        "DumpAvailable": False,
        "Inactive": name == "HardBounce",
        "CanActivate": True,
    }


def _deferred(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return _bounce(
        step, common, at, ("Transient", 2, "The server could not temporarily deliver your message.")
    )


def _bounced(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return _bounce(step, common, at, _BOUNCE_TYPES.get(step.bounce, _BOUNCE_TYPES[BounceKind.HARD]))


def _complaint(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    record = _bounce(
        step,
        common,
        at,
        ("SpamComplaint", 512, "The subscriber explicitly marked this message as spam."),
    )
    record["RecordType"] = "SpamComplaint"
    record["Details"] = ""
    record["Inactive"] = True
    return record


def _engagement(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return {
        **common,
        "ReceivedAt": at,
        "Platform": "Desktop",
        "UserAgent": step.user_agent,
        "Client": {"Name": "Apple Mail", "Company": "Apple", "Family": "Apple Mail"},
        "OS": {"Name": "OS X", "Company": "Apple Computer, Inc.", "Family": "OS X"},
        "Geo": {"IP": _READER_IP, "Country": "United States", "City": "San Francisco"},
    }


def _open(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return {
        "RecordType": "Open",
        "FirstOpen": True,
        "ReadSeconds": 0,
        **_engagement(step, common, at),
    }


def _click(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return {
        "RecordType": "Click",
        "ClickLocation": "HTML",
        "OriginalLink": CLICKED_URL,
        **_engagement(step, common, at),
    }


def _subscription(step: Step, common: dict[str, Any], at: str) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        **common,
        "ChangedAt": at,
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    }


_EVENTS: Final[Mapping[StepKind, Callable[[Step, dict[str, Any], str], dict[str, Any]]]] = {
    StepKind.DEFERRED: _deferred,
    StepKind.DELIVERED: _delivery,
    StepKind.BOUNCED: _bounced,
    StepKind.COMPLAINED: _complaint,
    StepKind.OPENED: _open,
    StepKind.CLICKED: _click,
    StepKind.UNSUBSCRIBED: _subscription,
}
"""What each step of a scenario is called in Postmark's webhooks; Postmark reports no queueing,
and a suppressed address is refused when sent to, not reported later."""


def _recipients(value: Any) -> list[str] | None:
    if not isinstance(value, str) or not value.strip():
        return None
    found = []
    for _, address in getaddresses([value]):
        try:
            found.append(Address.parse(address).email)
        except InvalidAddress:
            return None
    return found or None


def message_problem(message: Any) -> str | None:
    """Why Postmark would refuse a message (ErrorCode 300), or None."""
    if not isinstance(message, dict):
        return "The message is not a JSON object."
    if _recipients(message.get("From")) is None:
        return "Invalid 'From' address."
    recipients = _recipients(message.get("To"))
    if recipients is None:
        return "Invalid 'To' address."
    if len(recipients) > 50:
        return "Too many recipients: at most 50."
    if not (message.get("HtmlBody") or message.get("TextBody")):
        return "Provide either email TextBody or HtmlBody or both."
    metadata = message.get("Metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "Metadata values must be strings."
    return None


class PostmarkEmulator:
    """Postmark's email API and webhooks. ``server_token``: the only token accepted (any
    non-empty token when None); ``webhook_secret``: the credentials its webhooks carry."""

    name: ClassVar[str] = "postmark"

    def __init__(
        self, *, server_token: str | None = None, webhook_secret: str | None = None
    ) -> None:
        self.server_token = server_token
        self.signer = PostmarkWebhookSigner(webhook_secret)
        self.suppressions = SuppressionLists()
        """Message stream id -> its suppressions, in Postmark's shape (``EmailAddress``,
        ``SuppressionReason``, ``Origin``, ``CreatedAt``)."""

    @property
    def webhook_secret(self) -> str:
        return self.signer.secret

    def handles(self, path: str) -> bool:
        return path in (_SINGLE, _BATCH)

    def refusal(self, request: Incoming) -> Answer | None:
        """Postmark's 401 for a missing or wrong server token, else None."""
        token = request.headers.get("x-postmark-server-token", "")
        if not token or (
            self.server_token is not None and not secrets.compare_digest(token, self.server_token)
        ):
            return _error(
                401,
                10,
                "The Server Token you provided in the X-Postmark-Server-Token header was invalid.",
            )
        return None

    def accept(self, request: Incoming, now: datetime) -> tuple[Answer, list[SentCopy]]:
        refused = self.refusal(request)
        if refused is not None:
            return refused, []
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _error(422, 402, "Invalid JSON"), []
        if request.path == _SINGLE:
            result, copies = self._one(payload, now)
            status = 200 if result["ErrorCode"] == 0 else 422
            return Answer.json(status, result), copies
        if not isinstance(payload, list) or not payload:
            return _error(422, 300, "A batch is a JSON array of messages."), []
        if len(payload) > MAX_BATCH:
            return _error(422, 410, f"Too many batch messages: at most {MAX_BATCH}."), []
        results, copies = [], []
        for message in payload:
            result, made = self._one(message, now)
            results.append(result)
            copies.extend(made)
        return Answer.json(200, results), copies

    def _one(self, message: Any, now: datetime) -> tuple[dict[str, Any], list[SentCopy]]:
        problem = message_problem(message)
        if problem is not None:
            return {"ErrorCode": 300, "Message": problem}, []
        recipients = _recipients(message["To"]) or []
        stream = message.get("MessageStream") or "outbound"
        listed = {
            str(r.get("EmailAddress", "")).lower() for r in self.suppressions.records(str(stream))
        }
        inactive = [r for r in recipients if scenario_for(r).name == "dropped" or r in listed]
        if inactive:
            return {
                "ErrorCode": 406,
                "Message": "You tried to send to recipient(s) that have been marked as "
                f"inactive. Found inactive addresses: {', '.join(inactive)}. Inactive recipients "
                "are ones that have generated a hard bounce, a spam complaint, or a manual "
                "suppression.",
            }, []
        message_id = str(uuid.uuid4())
        metadata = message.get("Metadata", {})
        tag = message.get("Tag")
        copies = [
            SentCopy(
                provider=self.name,
                recipient=recipient,
                message_id=message_id,
                scenario=scenario_for(recipient),
                sender=message["From"],
                subject=str(message.get("Subject") or ""),
                accepted_at=now,
                tags=(tag,) if isinstance(tag, str) and tag else (),
                variables=dict(metadata),
                destination=tuple(recipients),
                opens=message.get("TrackOpens") is True,
                clicks=message.get("TrackLinks") not in (None, "None"),
                unreported=frozenset({StepKind.QUEUED}),
            )
            for recipient in recipients
        ]
        return {
            "To": message["To"],
            "SubmittedAt": iso_time(now),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }, copies

    def throttled(self, retry_after: int) -> Answer:
        return _error(429, 429, "Rate limit exceeded; slow down.")

    def event(self, copy: SentCopy, index: int, at: datetime) -> dict[str, Any]:
        step = copy.steps[index]
        common: dict[str, Any] = {
            "ServerID": _SERVER_ID,
            "MessageStream": "outbound",
            "MessageID": copy.message_id,
            "Recipient": copy.recipient,
            "Tag": copy.tags[0] if copy.tags else "",
            "Metadata": dict(copy.variables),
        }
        record = _EVENTS[step.kind](step, dict(common), iso_time(at))
        if record["RecordType"] in ("Bounce", "SpamComplaint"):
            # Postmark numbers its bounce records; the same step always gets the same number.
            token = stable_token(copy.message_id, copy.recipient, index, size=6)
            record["ID"] = int.from_bytes(token.encode()[:6], "big")
            record["From"] = copy.sender
            record["Subject"] = copy.subject
        return record

    def postings(self, events: Sequence[dict[str, Any]]) -> list[Posting]:
        postings = []
        for event in events:
            body = json.dumps(event, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "User-Agent": "Postmark"}
            headers.update(self.signer.sign(body))
            postings.append(Posting(body, headers))
        return postings

    def dsn(self, base_url: str) -> str:
        token = quote(self.server_token or "postmark-emulator", safe="")
        return (
            f"postmark://{token}@default?base_url={quote(base_url, safe=':/')}"
            f"&webhook_secret={quote(self.webhook_secret, safe=':')}"
        )

    def adapter(self, base_url: str, **options: Any) -> PostmarkAdapter:
        return PostmarkAdapter(
            self.server_token or "postmark-emulator",
            webhook_secrets=[self.webhook_secret],
            base_url=base_url,
            **options,
        )


# --------------------------------------------------------------------------- suppression list

_API_PATH: Final = re.compile(r"/message-streams/(?P<stream>[^/]+)/suppressions(?P<dump>/dump)?")


def handles_api(path: str) -> bool:
    return _API_PATH.fullmatch(path) is not None


def _matches(record: Mapping[str, Any], query: Mapping[str, list[str]]) -> bool:
    for name in ("SuppressionReason", "Origin", "EmailAddress"):
        wanted = next((v[0] for k, v in query.items() if k.lower() == name.lower() and v), None)
        if wanted is not None and str(record.get(name, "")).lower() != wanted.lower():
            return False
    return True


def answer_api(emulator: PostmarkEmulator, request: Incoming, now: datetime) -> Answer:
    """Postmark's Suppressions API for any message stream: ``GET .../suppressions/dump`` (the
    whole list, filtered by ``SuppressionReason``, ``Origin`` and ``EmailAddress``) and ``POST
    .../suppressions`` (at most 50 addresses, each answered ``Suppressed`` or ``Failed``)."""
    refused = emulator.refusal(request)
    if refused is not None:
        return refused
    found = _API_PATH.fullmatch(request.path)
    assert found is not None
    stream, lists = unquote(found["stream"]), emulator.suppressions
    if found["dump"] and request.method == "GET":
        query = parse_qs(request.query)
        reason = next((v[0] for k, v in query.items() if k.lower() == "suppressionreason"), None)
        if reason is not None and reason not in REASONS:
            return _error(422, 300, f"Invalid SuppressionReason: {reason}.")
        page = lists.page(stream, 0, 10**9)
        if page is None:
            return _error(500, 500, "Internal server error.")
        return Answer.json(200, {"Suppressions": [r for r in page if _matches(r, query)]})
    if not found["dump"] and request.method == "POST":
        try:
            entries = json.loads(request.body)["Suppressions"]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("Suppressions is not a list of objects")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return _error(422, 300, "The request should have a Suppressions array.")
        if len(entries) > PUSH_SIZE:
            return _error(422, 300, f"At most {PUSH_SIZE} suppressions can be added at once.")
        answers, records = [], []
        for entry in entries:
            address = entry.get("EmailAddress")
            try:
                email = Address.parse(address).email if isinstance(address, str) else None
            except InvalidAddress:
                email = None
            if email is None:
                answers.append(
                    {
                        "EmailAddress": address,
                        "Status": "Failed",
                        "Message": "Invalid email address",
                    }
                )
                continue
            answers.append({"EmailAddress": address, "Status": "Suppressed", "Message": None})
            records.append(
                {
                    "EmailAddress": email,
                    "SuppressionReason": "ManualSuppression",
                    "Origin": "Customer",
                    "CreatedAt": now.isoformat(timespec="seconds"),
                }
            )
        lists.add(stream, *records)
        return Answer.json(200, {"Suppressions": answers})
    return _error(405, 405, "Method not allowed.")
