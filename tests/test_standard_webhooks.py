"""The Standard Webhooks verifier and signer: the published vectors, and one attack per check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from unimailtrack import ConfigurationError, SignatureError
from unimailtrack.standard_webhooks import (
    MAX_SIGNATURE_HEADER,
    StandardWebhooks,
    new_secret,
)

# The vectors of the scheme's own test suites (libraries/*/tests in standard-webhooks).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_STAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_WRONG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
VECTOR_OTHER = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
AT = datetime.fromtimestamp(VECTOR_STAMP, UTC)


def vector_headers(**changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_STAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return headers


def reference_signature(key: bytes, msg_id: str, stamp: str, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@pytest.fixture
def verifier() -> StandardWebhooks:
    return StandardWebhooks(VECTOR_SECRET)


# --------------------------------------------------------------------------- the vectors


def test_signs_the_published_vector(verifier: StandardWebhooks) -> None:
    assert verifier.sign(VECTOR_ID, VECTOR_STAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert verifier.sign(VECTOR_ID, AT, VECTOR_BODY.decode()) == VECTOR_SIGNATURE


def test_verifies_the_published_vector(verifier: StandardWebhooks) -> None:
    verifier.verify(VECTOR_BODY, vector_headers(), now=AT)


def test_the_secret_without_its_prefix_is_the_same_key() -> None:
    StandardWebhooks(VECTOR_SECRET.removeprefix("whsec_")).verify(
        VECTOR_BODY, vector_headers(), now=AT
    )


def test_the_published_wrong_signature_is_refused(verifier: StandardWebhooks) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, vector_headers(webhook_signature=VECTOR_WRONG), now=AT)


def test_any_one_of_several_signatures_is_enough(verifier: StandardWebhooks) -> None:
    entries = [VECTOR_OTHER, VECTOR_OTHER.replace("v1,", "v2,"), VECTOR_SIGNATURE, VECTOR_OTHER]
    verifier.verify(VECTOR_BODY, vector_headers(webhook_signature=" ".join(entries)), now=AT)


def test_a_valid_signature_under_another_version_is_not_accepted(
    verifier: StandardWebhooks,
) -> None:
    headers = vector_headers(webhook_signature=VECTOR_SIGNATURE.replace("v1,", "v1a,"))
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, headers, now=AT)


def test_svix_header_names_are_read(verifier: StandardWebhooks) -> None:
    headers = {k.replace("webhook-", "svix-"): v for k, v in vector_headers().items()}
    verifier.verify(VECTOR_BODY, headers, now=AT)


def test_header_names_are_case_insensitive(verifier: StandardWebhooks) -> None:
    verifier.verify(VECTOR_BODY, {k.title(): v for k, v in vector_headers().items()}, now=AT)
    verifier.verify(VECTOR_BODY, httpx.Headers(vector_headers()), now=AT)


def test_agrees_with_an_hmac_computed_independently() -> None:
    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    body = b'{"type":"email.delivered","data":{}}'
    signer = StandardWebhooks(secret)
    assert signer.sign("msg_1", 1700000000, body) == reference_signature(
        key, "msg_1", "1700000000", body
    )


def test_headers_round_trip_in_both_families() -> None:
    signer = StandardWebhooks(new_secret())
    now = datetime.now(UTC)
    for prefix in ("webhook", "svix"):
        headers = signer.headers("msg_2", None, b"{}", prefix=prefix)
        assert set(headers) == {f"{prefix}-id", f"{prefix}-timestamp", f"{prefix}-signature"}
        signer.verify(b"{}", headers, now=now)
        signer.verify(b"{}", headers)


# --------------------------------------------------------------------------- rotation


def test_several_secrets_verify_and_the_first_signs() -> None:
    old, new = new_secret(), new_secret()
    both = StandardWebhooks([new, old])
    for secret in (old, new):
        headers = StandardWebhooks(secret).headers("msg_3", VECTOR_STAMP, b"x")
        both.verify(b"x", headers, now=AT)
    assert both.sign("msg_3", VECTOR_STAMP, b"x") == StandardWebhooks(new).sign(
        "msg_3", VECTOR_STAMP, b"x"
    )


def test_a_request_signed_with_old_and_new_secrets_passes_either_verifier() -> None:
    old, new = new_secret(), new_secret()
    entries = " ".join(StandardWebhooks(s).sign("msg_4", VECTOR_STAMP, b"y") for s in (old, new))
    headers = {"webhook-id": "msg_4", "webhook-timestamp": str(VECTOR_STAMP)}
    for secret in (old, new):
        StandardWebhooks(secret).verify(b"y", {**headers, "webhook-signature": entries}, now=AT)


# --------------------------------------------------------------------------- attacks


def test_fails_closed_without_a_secret() -> None:
    with pytest.raises(SignatureError):
        StandardWebhooks().verify(VECTOR_BODY, vector_headers(), now=AT)
    with pytest.raises(ConfigurationError):
        StandardWebhooks().sign(VECTOR_ID, VECTOR_STAMP, VECTOR_BODY)


def test_a_forged_body_is_refused(verifier: StandardWebhooks) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(b'{"test": 2432232315}', vector_headers(), now=AT)


def test_a_signature_forged_with_another_secret_is_refused(verifier: StandardWebhooks) -> None:
    forged = StandardWebhooks(new_secret()).sign(VECTOR_ID, VECTOR_STAMP, VECTOR_BODY)
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, vector_headers(webhook_signature=forged), now=AT)


def test_the_wrong_secret_refuses_a_genuine_request() -> None:
    with pytest.raises(SignatureError):
        StandardWebhooks(new_secret()).verify(VECTOR_BODY, vector_headers(), now=AT)


@pytest.mark.parametrize("offset", [-301, 301, -86400, 86400 * 365])
def test_stale_and_future_timestamps_are_refused(verifier: StandardWebhooks, offset: int) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, vector_headers(), now=AT + timedelta(seconds=offset))


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_the_tolerance_is_inclusive_both_ways(verifier: StandardWebhooks, offset: int) -> None:
    verifier.verify(VECTOR_BODY, vector_headers(), now=AT + timedelta(seconds=offset))


def test_a_signed_request_replayed_later_with_a_new_timestamp_is_refused(
    verifier: StandardWebhooks,
) -> None:
    later = AT + timedelta(hours=1)
    headers = vector_headers(webhook_timestamp=str(int(later.timestamp())))
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, headers, now=later)


def test_the_tolerance_is_configurable() -> None:
    wide = StandardWebhooks(VECTOR_SECRET, tolerance=timedelta(hours=1))
    wide.verify(VECTOR_BODY, vector_headers(), now=AT + timedelta(minutes=59))
    with pytest.raises(ConfigurationError):
        StandardWebhooks(VECTOR_SECRET, tolerance=timedelta(0))


def test_an_id_and_timestamp_re_cut_at_a_dot_are_refused() -> None:
    # "a.1614265330" + "." + "1614265331" + "." + body == "a" + "." + "1614265330" + "." + ...:
    # the same signed string, cut elsewhere. An id with a dot is never accepted.
    signer = StandardWebhooks(new_secret())
    stamp = str(VECTOR_STAMP)
    body = b"{}"
    key = signer._keys[0]
    signature = reference_signature(key, "a", stamp, f"{VECTOR_STAMP + 1}.".encode() + body)
    honest = {"webhook-id": "a", "webhook-timestamp": stamp, "webhook-signature": signature}
    signer.verify(f"{VECTOR_STAMP + 1}.".encode() + body, honest, now=AT)
    re_cut = {
        "webhook-id": f"a.{stamp}",
        "webhook-timestamp": str(VECTOR_STAMP + 1),
        "webhook-signature": signature,
    }
    with pytest.raises(SignatureError):
        signer.verify(body, re_cut, now=AT)
    with pytest.raises(ValueError, match="message id"):
        signer.sign(f"a.{stamp}", VECTOR_STAMP, body)


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "hello",
        "1614265330.0",
        "+1614265330",
        "-1614265330",
        " 1614265330",
        "1e9",
        "٣٣٣",
        "1614265330 ",
        "0x60380ff2",
        "9" * 13,
    ],
)
def test_a_timestamp_that_is_not_digits_is_refused(verifier: StandardWebhooks, stamp: str) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, vector_headers(webhook_timestamp=stamp), now=AT)


@pytest.mark.parametrize("bad_id", ["", "msg 1", "msg\n1", "msg\x001", "é" * 3, "m" * 257])
def test_an_id_that_is_not_a_plain_id_is_refused(bad_id: str) -> None:
    signer = StandardWebhooks(new_secret())
    key = signer._keys[0]
    headers = {
        "webhook-id": bad_id,
        "webhook-timestamp": str(VECTOR_STAMP),
        "webhook-signature": reference_signature(key, bad_id, str(VECTOR_STAMP), b"{}"),
    }
    with pytest.raises(SignatureError):
        signer.verify(b"{}", headers, now=AT)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(verifier: StandardWebhooks, missing: str) -> None:
    headers = vector_headers()
    del headers[missing]
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, headers, now=AT)


def test_headers_from_two_families_are_not_mixed(verifier: StandardWebhooks) -> None:
    headers = vector_headers()
    mixed = {
        "webhook-signature": headers["webhook-signature"],
        "svix-id": headers["webhook-id"],
        "svix-timestamp": headers["webhook-timestamp"],
    }
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, mixed, now=AT)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "v1",
        "v1,",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "v1,not base64!",
        "v1,g0hM9SsE",
        "v1:" + VECTOR_SIGNATURE[3:],
        "V1," + VECTOR_SIGNATURE[3:],
    ],
)
def test_a_malformed_signature_is_refused(verifier: StandardWebhooks, signature: str) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, vector_headers(webhook_signature=signature), now=AT)


def test_an_oversized_signature_header_is_refused_even_when_it_holds_the_match(
    verifier: StandardWebhooks,
) -> None:
    padding = " ".join([VECTOR_OTHER] * (MAX_SIGNATURE_HEADER // len(VECTOR_OTHER) + 1))
    headers = vector_headers(webhook_signature=f"{padding} {VECTOR_SIGNATURE}")
    assert len(headers["webhook-signature"]) > MAX_SIGNATURE_HEADER
    with pytest.raises(SignatureError):
        verifier.verify(VECTOR_BODY, headers, now=AT)


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"k" * 65).decode(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
    ],
)
def test_a_malformed_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        StandardWebhooks(secret)


def test_every_refusal_says_the_same_and_logs_why(
    verifier: StandardWebhooks, caplog: pytest.LogCaptureFixture
) -> None:
    messages = set()
    with caplog.at_level(logging.WARNING, logger="unimailtrack.webhooks"):
        for headers, now in [
            (vector_headers(webhook_signature=VECTOR_WRONG), AT),
            (vector_headers(), AT + timedelta(hours=1)),
            (vector_headers(webhook_timestamp="x"), AT),
        ]:
            with pytest.raises(SignatureError) as caught:
                verifier.verify(VECTOR_BODY, headers, now=now)
            messages.add(str(caught.value))
    assert len(messages) == 1
    assert len(caplog.records) == 3
    assert VECTOR_SECRET not in caplog.text


def test_signing_refuses_bad_arguments() -> None:
    signer = StandardWebhooks(new_secret())
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.sign("msg", datetime(2024, 1, 1), b"")  # naive on purpose
    with pytest.raises(ValueError, match="non-negative"):
        signer.sign("msg", -1, b"")
    with pytest.raises(ValueError, match="prefix"):
        signer.headers("msg", 1, b"", prefix="x")
    with pytest.raises(ValueError, match="bytes long"):
        new_secret(8)
